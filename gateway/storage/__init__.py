"""Durable local state: the one SQLite store base (`sqlite.py`: versioned schema files, transactions, sealing),
the keyring both stores seal with (`keys.py`), and atomic file replacement (`atomic.py`)."""
