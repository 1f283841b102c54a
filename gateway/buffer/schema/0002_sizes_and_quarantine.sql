-- Stored size per row, so quotas need no scan; and a quarantine for rows that fail authentication, so one
-- bad row neither blocks the uplink forever nor disappears without trace.
ALTER TABLE records ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
UPDATE records SET size = LENGTH(sealed) + LENGTH(nonce) + 64;

CREATE TABLE quarantine (
    seq            INTEGER PRIMARY KEY,
    lane           INTEGER NOT NULL,
    device         TEXT    NOT NULL,
    key_id         TEXT    NOT NULL,
    nonce          BLOB    NOT NULL,
    sealed         BLOB    NOT NULL,
    items          INTEGER NOT NULL,
    created_ns     INTEGER NOT NULL,
    reason         TEXT    NOT NULL,
    quarantined_ns INTEGER NOT NULL
) STRICT;
