"""The collectors, one per file (node_exporter's layout): each reads one source and knows nothing of the CLI."""
