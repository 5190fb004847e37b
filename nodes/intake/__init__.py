"""The intake socket: its protocol, its server, its authentication and its client."""
