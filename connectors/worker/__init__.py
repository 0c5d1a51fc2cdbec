"""The local Speechmatics-compatible batch worker: HTTP app, jobs, faults, control, and its engines."""
