"""Modbus TCP and RTU devices: register profiles, request coalescing, and the polling driver (pymodbus)."""
