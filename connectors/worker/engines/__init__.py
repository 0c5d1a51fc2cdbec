"""The local worker's recognition engines: `whisper` (real, needs the `[worker]` extra) and `reference`."""
