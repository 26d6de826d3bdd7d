-- The notification triggers of 0004 skip a host's own sessions in their WHEN
-- clauses, which Postgres checks without calling the function. Numbered in
-- lockstep with migrations/sqlite.
--
-- Why: since 0007 a host's sessions set `weft.notify` to `host` and the
-- function returned at once for them, but each row it fired for still paid
-- for a PL/pgSQL call and a queued after-trigger event: ~18 µs a run in a
-- batch start, ~90 µs in a start of one run (auto_explain's trigger times
-- on this machine), for a function that did nothing. Other sessions (an
-- older host during a rolling upgrade, a statement typed by hand) still
-- notify as before.

DROP TRIGGER runs_created ON runs;
CREATE TRIGGER runs_created AFTER INSERT ON runs
    FOR EACH ROW WHEN (NEW.status = 'running'
                       AND current_setting('weft.notify', true) IS DISTINCT FROM 'host')
    EXECUTE FUNCTION weft_notify_work('run');

DROP TRIGGER runs_woken ON runs;
CREATE TRIGGER runs_woken AFTER UPDATE OF wakeups ON runs
    FOR EACH ROW WHEN (NEW.wakeups > OLD.wakeups AND NEW.status = 'running'
                       AND current_setting('weft.notify', true) IS DISTINCT FROM 'host')
    EXECUTE FUNCTION weft_notify_work('run');

DROP TRIGGER timers_started ON timers;
CREATE TRIGGER timers_started AFTER INSERT ON timers
    FOR EACH ROW WHEN (current_setting('weft.notify', true) IS DISTINCT FROM 'host')
    EXECUTE FUNCTION weft_notify_work('timer');

DROP TRIGGER activity_tasks_scheduled ON activity_tasks;
CREATE TRIGGER activity_tasks_scheduled AFTER INSERT ON activity_tasks
    FOR EACH ROW WHEN (NEW.status = 'scheduled'
                       AND current_setting('weft.notify', true) IS DISTINCT FROM 'host')
    EXECUTE FUNCTION weft_notify_work('activity');

DROP TRIGGER activity_tasks_rescheduled ON activity_tasks;
CREATE TRIGGER activity_tasks_rescheduled AFTER UPDATE OF status ON activity_tasks
    FOR EACH ROW WHEN (NEW.status = 'scheduled' AND OLD.status <> 'scheduled'
                       AND current_setting('weft.notify', true) IS DISTINCT FROM 'host')
    EXECUTE FUNCTION weft_notify_work('activity');

DROP TRIGGER activity_tasks_deadline_set ON activity_tasks;
CREATE TRIGGER activity_tasks_deadline_set AFTER INSERT ON activity_tasks
    FOR EACH ROW WHEN (NEW.status = 'scheduled'
                       AND (NEW.close_deadline_ms IS NOT NULL OR NEW.start_deadline_ms IS NOT NULL)
                       AND current_setting('weft.notify', true) IS DISTINCT FROM 'host')
    EXECUTE FUNCTION weft_notify_work('timeout');

DROP TRIGGER activity_tasks_deadline_moved ON activity_tasks;
CREATE TRIGGER activity_tasks_deadline_moved AFTER UPDATE OF start_deadline_ms ON activity_tasks
    FOR EACH ROW WHEN (NEW.start_deadline_ms IS NOT NULL
                       AND NEW.start_deadline_ms IS DISTINCT FROM OLD.start_deadline_ms
                       AND current_setting('weft.notify', true) IS DISTINCT FROM 'host')
    EXECUTE FUNCTION weft_notify_work('timeout');
