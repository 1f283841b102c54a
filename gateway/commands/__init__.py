"""Signed control commands: verification, safety policy, state machine, and the tamper-evident audit log."""
