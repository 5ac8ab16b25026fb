"""Views of the store, pure functions of what it holds: the tidy table, paper tables, figures, ranks, reports, reproduction."""
