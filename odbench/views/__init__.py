"""Views of the store: tables, plots, the MLflow mirror, progress, paper reproduction."""
