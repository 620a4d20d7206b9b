"""Felix side of the driver: wire framing, message decoding, connections, statuses."""
