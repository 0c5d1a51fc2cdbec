"""Everything that touches the outside: Kafka, Speechmatics, the local worker, the CLI."""
