"""Classical detectors: the adapter that runs pyod models as odbench methods."""
