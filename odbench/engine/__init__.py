"""The engine: planning suites into jobs, executing them, the store, the registry, tuning."""
