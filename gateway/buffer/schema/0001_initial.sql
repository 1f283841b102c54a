-- Store-and-forward records.  One row is one batch of events of one lane from one device, already encoded in
-- the sync API's payload format and sealed with AES-256-GCM.  Only routing metadata is in the clear: lane,
-- device id (a configuration name, not a patient identifier), sizes and the gateway time the row was written.
CREATE TABLE records (
    seq        INTEGER PRIMARY KEY,        -- assigned by the writer; part of the GCM associated data
    lane       INTEGER NOT NULL,           -- gateway.model.Lane; lower drains first
    device     TEXT    NOT NULL,
    key_id     TEXT    NOT NULL,
    nonce      BLOB    NOT NULL,
    sealed     BLOB    NOT NULL,           -- ciphertext || 16-byte tag
    items      INTEGER NOT NULL,           -- events in the batch
    created_ns INTEGER NOT NULL
) STRICT;

CREATE INDEX records_by_lane ON records (lane, seq);

-- One sealed known value per key id, so a wrong key is refused at start-up, not at the first read.
CREATE TABLE key_check (
    key_id TEXT PRIMARY KEY,
    nonce  BLOB NOT NULL,
    sealed BLOB NOT NULL
) STRICT;
