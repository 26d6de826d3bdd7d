-- Weft's storage, first version. Numbered in lockstep with migrations/postgres,
-- and the same tables and columns: see that file for what each one means.
--
-- `events` is the truth; every other table is an index over it. No foreign
-- keys: the truth must not depend on an index. Tables are STRICT so that a
-- value of the wrong type is an error, not a silent conversion. Booleans are
-- INTEGER 0/1.

CREATE TABLE runs (
    run_id              TEXT PRIMARY KEY NOT NULL,
    workflow_id         TEXT NOT NULL,
    workflow_type       TEXT NOT NULL,
    module_sha256       TEXT NOT NULL,
    status              TEXT NOT NULL
                        CHECK (status IN ('running', 'stuck', 'completed', 'failed')),
    output              TEXT,
    failure             TEXT,
    stuck               TEXT,
    last_seq            INTEGER NOT NULL,
    last_hash           TEXT NOT NULL,
    created_at_ms       INTEGER NOT NULL,
    closed_at_ms        INTEGER,
    wakeups             INTEGER NOT NULL DEFAULT 1,
    handled_wakeups     INTEGER NOT NULL DEFAULT 0,
    -- When the run last went from "nothing to do" to woken: claims take the
    -- longest-waiting runs first, so that no run starves under load.
    woken_at_ms         INTEGER NOT NULL DEFAULT 0,
    lease_owner         TEXT,
    lease_expires_at_ms INTEGER NOT NULL DEFAULT 0,
    lease_token         INTEGER NOT NULL DEFAULT 0,
    lease_wakeups       INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE UNIQUE INDEX runs_open_workflow_id ON runs (workflow_id)
    WHERE status IN ('running', 'stuck');
CREATE INDEX runs_workflow_id ON runs (workflow_id, created_at_ms);
CREATE INDEX runs_woken ON runs (woken_at_ms)
    WHERE status = 'running' AND wakeups > handled_wakeups;
CREATE INDEX runs_lease_owner ON runs (lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE events (
    run_id         TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    kind           TEXT NOT NULL,
    payload        TEXT NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    hash           TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE activity_tasks (
    run_id              TEXT NOT NULL,
    seq                 INTEGER NOT NULL,
    name                TEXT NOT NULL,
    input               TEXT NOT NULL,
    options             TEXT NOT NULL,
    lease_ms            INTEGER NOT NULL,
    status              TEXT NOT NULL
                        CHECK (status IN ('scheduled', 'running', 'completed', 'failed', 'abandoned')),
    attempt             INTEGER NOT NULL DEFAULT 0,
    visible_at_ms       INTEGER NOT NULL,
    lease_owner         TEXT,
    lease_expires_at_ms INTEGER,
    lease_token         INTEGER NOT NULL DEFAULT 0,
    output              TEXT,
    failure             TEXT,
    resolved_at_ms      INTEGER,
    consumed            INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, seq)
) STRICT;

CREATE INDEX activity_tasks_due ON activity_tasks (visible_at_ms)
    WHERE status IN ('scheduled', 'running');
CREATE INDEX activity_tasks_claim ON activity_tasks (name, visible_at_ms)
    WHERE status IN ('scheduled', 'running');
CREATE INDEX activity_tasks_resolved ON activity_tasks (run_id, resolved_at_ms, seq)
    WHERE status IN ('completed', 'failed') AND consumed = 0;

CREATE TABLE timers (
    run_id     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    fire_at_ms INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq)
) STRICT, WITHOUT ROWID;

CREATE INDEX timers_fire_at ON timers (fire_at_ms);

CREATE TABLE signals (
    -- AUTOINCREMENT: ids are never reused, so they stay in arrival order.
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id         TEXT NOT NULL,
    name           TEXT NOT NULL,
    input          TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    consumed       INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX signals_unconsumed ON signals (run_id, id) WHERE consumed = 0;

CREATE TABLE modules (
    sha256        TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    bytes         BLOB NOT NULL,
    size          INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;
