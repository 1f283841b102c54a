"""Training scripts for the committed models (optional extra: pip install '.[training]')."""
