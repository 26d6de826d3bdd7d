-- Workflow lifecycle: child workflows, continue-as-new, cancellation,
-- termination, run and execution timeouts, updates, the status line, search
-- attributes and memo. Numbered in lockstep with migrations/sqlite.

ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check CHECK (status IN (
    'running', 'stuck', 'completed', 'failed',
    'cancelled', 'terminated', 'continued_as_new', 'timed_out'));

ALTER TABLE runs
    -- A child's link to its parent (also in the child's event 1).
    ADD COLUMN parent_workflow_id     TEXT,
    ADD COLUMN parent_run_id          TEXT,
    ADD COLUMN parent_seq             BIGINT,
    ADD COLUMN status_line            TEXT,
    -- A JSON object of scalars; filtered on by `list`.
    ADD COLUMN search_attributes      TEXT NOT NULL DEFAULT '{}',
    ADD COLUMN memo                   TEXT,
    -- A cancel request: the first reason wins; delivered once as a job.
    ADD COLUMN cancel_reason          TEXT,
    ADD COLUMN cancel_requested_at_ms BIGINT,
    ADD COLUMN cancel_delivered       BOOLEAN NOT NULL DEFAULT FALSE,
    -- A termination asked for and not yet carried out.
    ADD COLUMN termination_reason     TEXT,
    -- The earlier of the run and execution deadlines; a running run past it is claimable.
    ADD COLUMN deadline_ms            BIGINT,
    ADD COLUMN execution_deadline_ms  BIGINT,
    -- Each run's own limit, kept so that a continued run gets it afresh.
    ADD COLUMN run_timeout_ms         BIGINT,
    ADD COLUMN continued_to           TEXT;

CREATE INDEX runs_deadline ON runs (deadline_ms)
    WHERE status = 'running' AND deadline_ms IS NOT NULL;
CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE INDEX runs_type_created ON runs (workflow_type, created_at_ms);

-- A parent's children, by the seq of its `child_workflow_initiated`. The row
-- follows the child across continue-as-new (`child_run_id` is the current run)
-- and holds the child's final outcome until the parent consumes it.
CREATE TABLE children (
    parent_run_id       TEXT NOT NULL,
    seq                 BIGINT NOT NULL,
    workflow_id         TEXT NOT NULL,
    -- NULL when the child could not be started.
    child_run_id        TEXT,
    parent_close_policy TEXT NOT NULL
                        CHECK (parent_close_policy IN ('terminate', 'request_cancel', 'abandon')),
    resolved            BOOLEAN NOT NULL DEFAULT FALSE,
    output              TEXT,
    failure             TEXT,
    resolved_at_ms      BIGINT,
    consumed            BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (parent_run_id, seq)
);

CREATE INDEX children_child_run ON children (child_run_id) WHERE NOT resolved;
CREATE INDEX children_resolved ON children (parent_run_id, resolved_at_ms, seq)
    WHERE resolved AND NOT consumed;

-- Updates accepted for a run: delivered as jobs, answered by the workflow.
CREATE TABLE updates (
    run_id          TEXT NOT NULL,
    update_id       TEXT NOT NULL,
    -- Increasing in arrival order (update ids are the caller's and say nothing of order).
    id              BIGINT GENERATED ALWAYS AS IDENTITY,
    name            TEXT NOT NULL,
    input           TEXT NOT NULL,
    received_at_ms  BIGINT NOT NULL,
    consumed        BOOLEAN NOT NULL DEFAULT FALSE,
    completed       BOOLEAN NOT NULL DEFAULT FALSE,
    output          TEXT,
    failure         TEXT,
    completed_at_ms BIGINT,
    PRIMARY KEY (run_id, update_id)
);

CREATE INDEX updates_unconsumed ON updates (run_id, id) WHERE NOT consumed;
