"""Local orchestration without Docker: Prometheus, exporters and simulator as supervised processes."""
