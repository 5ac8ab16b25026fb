"""odbench: a benchmark harness for one-class classification and anomaly detection."""

__version__ = "0.1.0"
