-- An activity's result and the step it wakes update the run's row in place
-- (a heap-only tuple: no index touched). Numbered in lockstep with
-- migrations/sqlite.
--
-- Postgres updates a row in place only when no indexed column changes —
-- including the columns an index's WHERE names — and the row's page has
-- room. Each step of a warm run counts a wake-up and its handling
-- (`wakeups` and `handled_wakeups` both move on), which `runs_woken`'s
-- predicate read: so every step wrote a new entry into each of the runs
-- indexes. The predicate now reads one stored column that says whether
-- the run is woken, which a step leaves false; the step no longer moves
-- `woken_at_ms` (it matters only while the run is woken); and each page
-- keeps a fifth free for the next versions of its rows.
--
-- Adding a stored column rewrites the table once (locked meanwhile), with
-- the new fill factor.

ALTER TABLE runs SET (fillfactor = 80);
ALTER TABLE runs ADD COLUMN woken BOOLEAN GENERATED ALWAYS AS (wakeups > handled_wakeups) STORED;
DROP INDEX runs_woken;
-- Runs woken and not yet activated, longest-waiting first: the claim's first source of work.
CREATE INDEX runs_woken ON runs (woken_at_ms) WHERE status = 'running' AND woken;
