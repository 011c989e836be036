"""Prometheus exporter for AWS DeepRacer training progress."""

__version__ = "0.1.0"
