"""The IoMT edge gateway daemon: domain model, pipeline, encrypted buffer, alarms, supervision, CLI."""

__version__ = "0.1.0"
