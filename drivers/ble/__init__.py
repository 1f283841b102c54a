"""Bluetooth Low Energy: pure GATT codecs (no I/O) for the medical profiles the gateway speaks."""
