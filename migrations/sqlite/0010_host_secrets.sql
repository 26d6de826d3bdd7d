-- Secrets every host on this database shares: the key that MACs the task
-- tokens handed to remote activity workers, so that a task claimed through
-- one host can be reported on through another. One row, written once by
-- the first host that needs it (insert-if-absent, so hosts racing agree).
-- Numbered in lockstep with the other backend's migrations.

CREATE TABLE host_secrets (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    -- HMAC-SHA256 key: 32 random bytes.
    task_token_key BLOB NOT NULL CHECK (length(task_token_key) = 32)
);
