"""Telephony websockets into calls.audio (one module per protocol)."""
