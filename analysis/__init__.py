"""Offline analysis of runs: records + Prometheus telemetry -> knees, correlations, gates, CSVs, figures, report."""
