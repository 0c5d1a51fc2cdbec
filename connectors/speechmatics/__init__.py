"""The Speechmatics side: the submission service (SDK client, throttle, retries, job journal, webhooks, WAV)."""
