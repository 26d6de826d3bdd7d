-- Weft's storage, first version. Numbered in lockstep with migrations/sqlite.
--
-- `events` is the truth: each run's append-only, hash-chained history. Every
-- other table is an index over it that lets work be found quickly. There are no
-- foreign keys: the truth must not depend on an index, and every write to a
-- child table happens in the same statement as the conditional update of its
-- `runs` row. Every table is keyed by run_id first, so that the schema can be
-- distributed by run id. Times are milliseconds since the Unix epoch, given by
-- the caller. JSON is stored as TEXT exactly as written (the hash covers the
-- event payload's exact text).

CREATE TABLE runs (
    run_id              TEXT PRIMARY KEY,
    workflow_id         TEXT NOT NULL,
    workflow_type       TEXT NOT NULL,
    module_sha256       TEXT NOT NULL,
    status              TEXT NOT NULL
                        CHECK (status IN ('running', 'stuck', 'completed', 'failed')),
    output              TEXT,
    failure             TEXT,
    stuck               TEXT,
    last_seq            BIGINT NOT NULL,
    last_hash           TEXT NOT NULL,
    created_at_ms       BIGINT NOT NULL,
    closed_at_ms        BIGINT,
    -- Bumped by everything that gives the run a job (creation, a signal, an
    -- activity's final outcome); an activation marks the value it observed at
    -- claim time as handled, so a wake-up that arrives mid-activation is kept.
    wakeups             BIGINT NOT NULL DEFAULT 1,
    handled_wakeups     BIGINT NOT NULL DEFAULT 0,
    -- When the run last went from "nothing to do" to woken: claims take the
    -- longest-waiting runs first, so that no run starves under load.
    woken_at_ms         BIGINT NOT NULL DEFAULT 0,
    lease_owner         TEXT,
    -- 0 while no host holds the run, so that free and expired leases are one index range.
    lease_expires_at_ms BIGINT NOT NULL DEFAULT 0,
    -- Fencing token: incremented by every claim and by every lease taken over.
    lease_token         BIGINT NOT NULL DEFAULT 0,
    -- `wakeups` as read by the current claim.
    lease_wakeups       BIGINT NOT NULL DEFAULT 0
);

-- One open run per workflow id.
CREATE UNIQUE INDEX runs_open_workflow_id ON runs (workflow_id)
    WHERE status IN ('running', 'stuck');
CREATE INDEX runs_workflow_id ON runs (workflow_id, created_at_ms);
-- Runs woken and not yet activated, longest-waiting first: the claim's first source of work.
CREATE INDEX runs_woken ON runs (woken_at_ms)
    WHERE status = 'running' AND wakeups > handled_wakeups;
-- The runs a host holds (reclaimed when the host restarts).
CREATE INDEX runs_lease_owner ON runs (lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE events (
    run_id         TEXT NOT NULL,
    seq            BIGINT NOT NULL,
    kind           TEXT NOT NULL,
    payload        TEXT NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    -- Hex sha256 chaining this event to the previous one.
    hash           TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE activity_tasks (
    run_id              TEXT NOT NULL,
    seq                 BIGINT NOT NULL,
    name                TEXT NOT NULL,
    input               TEXT NOT NULL,
    options             TEXT NOT NULL,
    -- The options' start-to-close timeout: how long an attempt's lease lasts (0: the host default).
    lease_ms            BIGINT NOT NULL,
    status              TEXT NOT NULL
                        CHECK (status IN ('scheduled', 'running', 'completed', 'failed', 'abandoned')),
    attempt             BIGINT NOT NULL DEFAULT 0,
    -- When the task can next be claimed: for `scheduled`, the earliest next
    -- attempt; for `running`, the lease expiry (a lost attempt is retried).
    visible_at_ms       BIGINT NOT NULL,
    lease_owner         TEXT,
    lease_expires_at_ms BIGINT,
    lease_token         BIGINT NOT NULL DEFAULT 0,
    output              TEXT,
    -- The final failure, or the last retried one while scheduled again.
    failure             TEXT,
    resolved_at_ms      BIGINT,
    -- The resolution is in the run's history.
    consumed            BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (run_id, seq)
);

-- Claiming in visibility order: through the first index when the claimer takes
-- most names (a host running its own activities), the second for a rare name.
CREATE INDEX activity_tasks_due ON activity_tasks (visible_at_ms)
    WHERE status IN ('scheduled', 'running');
CREATE INDEX activity_tasks_claim ON activity_tasks (name, visible_at_ms)
    WHERE status IN ('scheduled', 'running');
CREATE INDEX activity_tasks_resolved ON activity_tasks (run_id, resolved_at_ms, seq)
    WHERE status IN ('completed', 'failed') AND NOT consumed;

CREATE TABLE timers (
    run_id     TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    fire_at_ms BIGINT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE INDEX timers_fire_at ON timers (fire_at_ms);

CREATE TABLE signals (
    run_id         TEXT NOT NULL,
    -- Increasing in arrival order.
    id             BIGINT GENERATED ALWAYS AS IDENTITY,
    name           TEXT NOT NULL,
    input          TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    consumed       BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (run_id, id)
);

CREATE INDEX signals_unconsumed ON signals (run_id, id) WHERE NOT consumed;

CREATE TABLE modules (
    sha256        TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    bytes         BYTEA NOT NULL,
    size          BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
