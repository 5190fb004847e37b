"""A node process and the launcher: node, logs, metrics."""
