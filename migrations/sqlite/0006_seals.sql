-- Seals: a host with a signing key signs the head of every run once it has
-- closed, so that a closed history edited afterwards in the database — even
-- with every hash recomputed — no longer matches what the host sealed.
-- Numbered in lockstep with the other backend's migrations.

CREATE TABLE seals (
    run_id       TEXT PRIMARY KEY,
    -- The history it covers: its number of events and the last one's hash.
    event_count  BIGINT NOT NULL,
    head         TEXT NOT NULL,
    -- Ed25519, hex: the sealing host's public key and its signature.
    public_key   TEXT NOT NULL,
    signature    TEXT NOT NULL,
    sealed_at_ms BIGINT NOT NULL
);

ALTER TABLE runs ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;

-- The closed runs still to seal, oldest first.
CREATE INDEX runs_unsealed ON runs (closed_at_ms) WHERE closed_at_ms IS NOT NULL AND NOT sealed;
