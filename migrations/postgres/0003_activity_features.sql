-- Activity timeouts, heartbeats and cancellation. Numbered in lockstep with
-- migrations/sqlite.
--
-- Each timeout is kept as an absolute deadline in its own column, NULL when it
-- does not apply in the task's current state, so that the host's timeout
-- sweep finds every expired task through one short index range per kind.

ALTER TABLE activity_tasks
    -- The options' timeouts that apply afresh to each attempt (0: none).
    ADD COLUMN schedule_to_start_ms  BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN heartbeat_timeout_ms  BIGINT NOT NULL DEFAULT 0,
    -- Scheduling time plus the schedule-to-close timeout: the whole activity,
    -- retries included, must resolve by then.
    ADD COLUMN close_deadline_ms     BIGINT,
    -- While scheduled: when the waiting attempt must have been picked up.
    ADD COLUMN start_deadline_ms     BIGINT,
    -- While running: the last heartbeat (or the start) plus the heartbeat timeout.
    ADD COLUMN heartbeat_deadline_ms BIGINT,
    -- The details of the last heartbeat of any attempt (JSON), handed to the next attempt.
    ADD COLUMN heartbeat_details     TEXT,
    ADD COLUMN heartbeat_at_ms       BIGINT,
    -- Set when the workflow cancelled the activity (it then resolved as failed).
    ADD COLUMN cancelled_at_ms       BIGINT;

CREATE INDEX activity_tasks_close_deadline ON activity_tasks (close_deadline_ms)
    WHERE status IN ('scheduled', 'running') AND close_deadline_ms IS NOT NULL;
CREATE INDEX activity_tasks_start_deadline ON activity_tasks (start_deadline_ms)
    WHERE status = 'scheduled' AND start_deadline_ms IS NOT NULL;
CREATE INDEX activity_tasks_heartbeat_deadline ON activity_tasks (heartbeat_deadline_ms)
    WHERE status = 'running' AND heartbeat_deadline_ms IS NOT NULL;
