"""Kafka I/O: client configuration, the flow's producing sink, topic management, and a local broker for development."""
