-- Versions: each module name's default (the module new runs take), and the
-- indexes that let operators see which runs use a module and collect closed
-- runs past their retention. Numbered in lockstep with migrations/sqlite.

CREATE TABLE module_defaults (
    name          TEXT PRIMARY KEY,
    sha256        TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- Until now a start took the newest module of a name: that one becomes its default.
INSERT INTO module_defaults (name, sha256, updated_at_ms)
SELECT m.name, m.sha256, m.created_at_ms FROM modules m
 WHERE NOT EXISTS (
     SELECT 1 FROM modules n
      WHERE n.name = m.name
        AND (n.created_at_ms > m.created_at_ms
             OR (n.created_at_ms = m.created_at_ms AND n.sha256 > m.sha256)));

CREATE INDEX modules_name_version ON modules (name, version);
CREATE INDEX runs_module ON runs (module_sha256, status);
CREATE INDEX runs_closed ON runs (closed_at_ms) WHERE closed_at_ms IS NOT NULL;
