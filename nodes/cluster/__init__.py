"""Node-to-node: the transport, the wire codec, membership, placement and remote children."""
