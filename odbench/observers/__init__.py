"""Watching a suite while it runs: the progress display, the MLflow mirror of the store, the MLflow UI's server."""
