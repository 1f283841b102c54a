"""Edge intelligence: streaming signal processing and on-device models (arrives with the edge-ML work)."""
