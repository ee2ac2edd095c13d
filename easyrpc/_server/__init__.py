"""The server's connections: handshake, reading (through the hub), calls and streams."""
