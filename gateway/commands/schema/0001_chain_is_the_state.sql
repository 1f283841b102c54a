-- The command store, version 1: the audit chain carries the state (replay memory, command transitions).
-- IF NOT EXISTS: a version-0 file already has these tables; its rows are adopted into the chain by the
-- migration to version 1, in the same transaction (gateway/commands/store.py, CommandStore.schema_applied).
CREATE TABLE IF NOT EXISTS seen (
    command_id TEXT PRIMARY KEY, received_ns INTEGER NOT NULL, expires_ns INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY, device TEXT NOT NULL, type TEXT NOT NULL, state TEXT NOT NULL,
    created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL, key_id TEXT NOT NULL, nonce BLOB NOT NULL,
    sealed BLOB NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS commands_by_device ON commands (device, created_ns);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, prev_hash BLOB NOT NULL, hash BLOB NOT NULL, key_id TEXT NOT NULL,
    nonce BLOB NOT NULL, sealed BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1), key_id TEXT NOT NULL, nonce BLOB NOT NULL, sealed BLOB NOT NULL
) STRICT;
