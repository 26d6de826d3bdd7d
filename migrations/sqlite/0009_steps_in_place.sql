-- Numbered in lockstep with migrations/postgres, whose 0009 lets a warm
-- run's step update its row in place (a Postgres heap-only tuple). SQLite
-- has no such updates: nothing changes here.
SELECT 1;
