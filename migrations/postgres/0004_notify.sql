-- Wakes idle hosts. Numbered in lockstep with migrations/sqlite.
--
-- Every host LISTENs on channel `weft_work`; a transaction that makes work
-- ready notifies it with the payload `<kind> <schema>` (the schema lets hosts
-- of different schemas in one database ignore each other). Postgres delivers
-- a notification at commit and folds identical payloads of one transaction
-- into one, so a batch of rows costs one notification per kind.
--
-- The triggers are per row but guarded by WHEN clauses that Postgres checks
-- without calling the function: claims, heartbeats and commits that only
-- consume work notify nobody (a notification per claim would wake every host
-- on every claim, and NOTIFY serialises the commits that send one).
--
-- kinds: `run` a run became runnable (created, or woken by a signal, an
-- activity's result, a child, a cancel or termination request); `timer` a
-- timer started, which may be due before the one a host sleeps until;
-- `activity` an activity task became claimable (scheduled, or a retry);
-- `timeout` an activity deadline was set that the timeout sweep must enforce.

CREATE FUNCTION weft_notify_work() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('weft_work', TG_ARGV[0] || ' ' || TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_created AFTER INSERT ON runs
    FOR EACH ROW WHEN (NEW.status = 'running')
    EXECUTE FUNCTION weft_notify_work('run');

CREATE TRIGGER runs_woken AFTER UPDATE OF wakeups ON runs
    FOR EACH ROW WHEN (NEW.wakeups > OLD.wakeups AND NEW.status = 'running')
    EXECUTE FUNCTION weft_notify_work('run');

CREATE TRIGGER timers_started AFTER INSERT ON timers
    FOR EACH ROW
    EXECUTE FUNCTION weft_notify_work('timer');

CREATE TRIGGER activity_tasks_scheduled AFTER INSERT ON activity_tasks
    FOR EACH ROW WHEN (NEW.status = 'scheduled')
    EXECUTE FUNCTION weft_notify_work('activity');

CREATE TRIGGER activity_tasks_rescheduled AFTER UPDATE OF status ON activity_tasks
    FOR EACH ROW WHEN (NEW.status = 'scheduled' AND OLD.status <> 'scheduled')
    EXECUTE FUNCTION weft_notify_work('activity');

CREATE TRIGGER activity_tasks_deadline_set AFTER INSERT ON activity_tasks
    FOR EACH ROW WHEN (NEW.status = 'scheduled'
                       AND (NEW.close_deadline_ms IS NOT NULL OR NEW.start_deadline_ms IS NOT NULL))
    EXECUTE FUNCTION weft_notify_work('timeout');

CREATE TRIGGER activity_tasks_deadline_moved AFTER UPDATE OF start_deadline_ms ON activity_tasks
    FOR EACH ROW WHEN (NEW.start_deadline_ms IS NOT NULL
                       AND NEW.start_deadline_ms IS DISTINCT FROM OLD.start_deadline_ms)
    EXECUTE FUNCTION weft_notify_work('timeout');
