"""Split-inference latency testbed (Head Network Distillation, Section V)."""

__version__ = "0.1.0"
