"""The remote shell: its protocol, server, commands and client."""
