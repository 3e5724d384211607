"""Prometheus exporters for the rig: custom prometheus_client collectors over /proc and /sys."""
