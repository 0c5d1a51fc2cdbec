"""The public contracts: audio frames, chunks, transcript events, and their JSON/AsyncAPI documents."""
