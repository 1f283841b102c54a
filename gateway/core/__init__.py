"""The core every layer stands on: the semantic model, the error tree, the MDC/UCUM table, logging, the sync
API's wire format and the counters.  It imports nothing else of the project; drivers, edge_ml and cloud_sync
import only this (tests/unit/test_import_directions.py holds everyone to it)."""
