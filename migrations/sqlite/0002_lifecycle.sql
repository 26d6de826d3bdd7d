-- Workflow lifecycle: child workflows, continue-as-new, cancellation,
-- termination, run and execution timeouts, updates, the status line, search
-- attributes and memo. Numbered in lockstep with migrations/postgres, which
-- says what each column means.
--
-- SQLite cannot change a CHECK constraint in place, so `runs` is rebuilt with
-- the new statuses and columns.

CREATE TABLE runs_v2 (
    run_id                 TEXT PRIMARY KEY NOT NULL,
    workflow_id            TEXT NOT NULL,
    workflow_type          TEXT NOT NULL,
    module_sha256          TEXT NOT NULL,
    status                 TEXT NOT NULL
                           CHECK (status IN ('running', 'stuck', 'completed', 'failed',
                               'cancelled', 'terminated', 'continued_as_new', 'timed_out')),
    output                 TEXT,
    failure                TEXT,
    stuck                  TEXT,
    last_seq               INTEGER NOT NULL,
    last_hash              TEXT NOT NULL,
    created_at_ms          INTEGER NOT NULL,
    closed_at_ms           INTEGER,
    wakeups                INTEGER NOT NULL DEFAULT 1,
    handled_wakeups        INTEGER NOT NULL DEFAULT 0,
    woken_at_ms            INTEGER NOT NULL DEFAULT 0,
    lease_owner            TEXT,
    lease_expires_at_ms    INTEGER NOT NULL DEFAULT 0,
    lease_token            INTEGER NOT NULL DEFAULT 0,
    lease_wakeups          INTEGER NOT NULL DEFAULT 0,
    parent_workflow_id     TEXT,
    parent_run_id          TEXT,
    parent_seq             INTEGER,
    status_line            TEXT,
    search_attributes      TEXT NOT NULL DEFAULT '{}',
    memo                   TEXT,
    cancel_reason          TEXT,
    cancel_requested_at_ms INTEGER,
    cancel_delivered       INTEGER NOT NULL DEFAULT 0,
    termination_reason     TEXT,
    deadline_ms            INTEGER,
    execution_deadline_ms  INTEGER,
    run_timeout_ms         INTEGER,
    continued_to           TEXT
) STRICT;

INSERT INTO runs_v2 (run_id, workflow_id, workflow_type, module_sha256, status, output,
    failure, stuck, last_seq, last_hash, created_at_ms, closed_at_ms, wakeups,
    handled_wakeups, woken_at_ms, lease_owner, lease_expires_at_ms, lease_token, lease_wakeups)
SELECT run_id, workflow_id, workflow_type, module_sha256, status, output,
    failure, stuck, last_seq, last_hash, created_at_ms, closed_at_ms, wakeups,
    handled_wakeups, woken_at_ms, lease_owner, lease_expires_at_ms, lease_token, lease_wakeups
FROM runs;

DROP TABLE runs;
ALTER TABLE runs_v2 RENAME TO runs;

CREATE UNIQUE INDEX runs_open_workflow_id ON runs (workflow_id)
    WHERE status IN ('running', 'stuck');
CREATE INDEX runs_workflow_id ON runs (workflow_id, created_at_ms);
CREATE INDEX runs_woken ON runs (woken_at_ms)
    WHERE status = 'running' AND wakeups > handled_wakeups;
CREATE INDEX runs_lease_owner ON runs (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX runs_deadline ON runs (deadline_ms)
    WHERE status = 'running' AND deadline_ms IS NOT NULL;
CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE INDEX runs_type_created ON runs (workflow_type, created_at_ms);

CREATE TABLE children (
    parent_run_id       TEXT NOT NULL,
    seq                 INTEGER NOT NULL,
    workflow_id         TEXT NOT NULL,
    child_run_id        TEXT,
    parent_close_policy TEXT NOT NULL
                        CHECK (parent_close_policy IN ('terminate', 'request_cancel', 'abandon')),
    resolved            INTEGER NOT NULL DEFAULT 0,
    output              TEXT,
    failure             TEXT,
    resolved_at_ms      INTEGER,
    consumed            INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (parent_run_id, seq)
) STRICT;

CREATE INDEX children_child_run ON children (child_run_id) WHERE resolved = 0;
CREATE INDEX children_resolved ON children (parent_run_id, resolved_at_ms, seq)
    WHERE resolved = 1 AND consumed = 0;

CREATE TABLE updates (
    run_id          TEXT NOT NULL,
    update_id       TEXT NOT NULL,
    -- Increasing in arrival order: one more than the run's last, given by the one writer.
    id              INTEGER NOT NULL,
    name            TEXT NOT NULL,
    input           TEXT NOT NULL,
    received_at_ms  INTEGER NOT NULL,
    consumed        INTEGER NOT NULL DEFAULT 0,
    completed       INTEGER NOT NULL DEFAULT 0,
    output          TEXT,
    failure         TEXT,
    completed_at_ms INTEGER,
    PRIMARY KEY (run_id, update_id)
) STRICT, WITHOUT ROWID;

CREATE INDEX updates_unconsumed ON updates (run_id, id) WHERE consumed = 0;
