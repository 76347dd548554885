"""Flow entrypoints that deployments point at."""
