"""maillab: the CLI and what ties the parts together."""
