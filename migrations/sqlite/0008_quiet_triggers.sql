-- Numbered in lockstep with migrations/postgres, whose 0008 keeps its
-- notification triggers from calling their function for a host's own
-- sessions. SQLite has one host per file and no notifications: nothing
-- changes here.
SELECT 1;
