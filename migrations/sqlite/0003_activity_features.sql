-- Activity timeouts, heartbeats and cancellation. Numbered in lockstep with
-- migrations/postgres, which says what each column means.

ALTER TABLE activity_tasks ADD COLUMN schedule_to_start_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE activity_tasks ADD COLUMN heartbeat_timeout_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE activity_tasks ADD COLUMN close_deadline_ms INTEGER;
ALTER TABLE activity_tasks ADD COLUMN start_deadline_ms INTEGER;
ALTER TABLE activity_tasks ADD COLUMN heartbeat_deadline_ms INTEGER;
ALTER TABLE activity_tasks ADD COLUMN heartbeat_details TEXT;
ALTER TABLE activity_tasks ADD COLUMN heartbeat_at_ms INTEGER;
ALTER TABLE activity_tasks ADD COLUMN cancelled_at_ms INTEGER;

CREATE INDEX activity_tasks_close_deadline ON activity_tasks (close_deadline_ms)
    WHERE status IN ('scheduled', 'running') AND close_deadline_ms IS NOT NULL;
CREATE INDEX activity_tasks_start_deadline ON activity_tasks (start_deadline_ms)
    WHERE status = 'scheduled' AND start_deadline_ms IS NOT NULL;
CREATE INDEX activity_tasks_heartbeat_deadline ON activity_tasks (heartbeat_deadline_ms)
    WHERE status = 'running' AND heartbeat_deadline_ms IS NOT NULL;
