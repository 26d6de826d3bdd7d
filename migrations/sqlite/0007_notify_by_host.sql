-- Numbered in lockstep with migrations/postgres, whose 0007 moves the
-- notifications that wake other hosts out of their triggers. SQLite has one
-- host per file and no notifications: nothing changes here.
SELECT 1;
