"""Where and how actors run: the topology, the node process, logging and the CLI."""
