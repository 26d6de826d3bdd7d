-- Wakes idle hosts: nothing to do here. Numbered in lockstep with
-- migrations/postgres, where triggers NOTIFY the hosts sharing a database;
-- an SQLite database has one host, which its own loops wake in process.
SELECT 1;
