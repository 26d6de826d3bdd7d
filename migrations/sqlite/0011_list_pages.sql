-- The list of runs is read a page at a time, newest first, each page after
-- the last run of the page before (keyset paging):
--   WHERE (created_at_ms, run_id) < ($1, $2)
--   ORDER BY created_at_ms DESC, run_id DESC LIMIT n
-- Without an index on that key every page of the unfiltered list (the
-- UI's first page, `weft list`) read and sorted the whole table; with it a
-- page reads its own rows, backwards from the cursor, and stops. Neither
-- column changes once a run is written, so updating a run never moves its
-- entry. Numbered in lockstep with migrations/postgres (0010 is
-- the task tokens').

CREATE INDEX runs_created ON runs (created_at_ms, run_id);
