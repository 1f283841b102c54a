"""Committed on-device models: each `NAME.tflite` beside its manifest `NAME.json` (see edge_ml.runtime)."""
