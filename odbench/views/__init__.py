"""Views of the store, pure functions of what it holds: tables, figures, ranks, reports, reproduction."""
