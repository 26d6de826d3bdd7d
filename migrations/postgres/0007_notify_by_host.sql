-- Hosts send their notifications themselves, after their commits, instead
-- of from the triggers of 0004 inside them. Numbered in lockstep with
-- migrations/sqlite.
--
-- Why: a transaction that NOTIFYs holds a cluster-wide lock from its commit
-- until its commit record is flushed, so notifying transactions never share
-- a WAL flush, and every activation commit notified someone. A host now
-- sends `pg_notify` in a statement of its own once its commit returned:
-- that statement writes nothing, waits for no flush, and folds the
-- notifications of many commits into one.
--
-- A connection that sets `weft.notify` to `host` (every pooled connection
-- of such a host does, at connect) makes the triggers do nothing; any other
-- session — an older host during a rolling upgrade, a statement typed by
-- hand — still notifies through them, so no host misses work.

CREATE OR REPLACE FUNCTION weft_notify_work() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('weft.notify', true) = 'host' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('weft_work', TG_ARGV[0] || ' ' || TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;
