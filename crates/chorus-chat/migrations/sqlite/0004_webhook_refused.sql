-- A webhook delivery whose target is not allowed (a private, loopback or otherwise
-- internal address) is recorded as `refused`: nothing was sent, and it is not retried.
--
-- SQLite cannot change a CHECK constraint, so both webhook tables are rebuilt: the
-- attempts too, so that their foreign key follows the new deliveries table (renaming
-- a table rewrites the references to it). Ids and the id sequence are kept.

CREATE TABLE webhook_deliveries_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    event_id        TEXT NOT NULL,
    url             TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'refused')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    UNIQUE (user_id, event_id)
);
INSERT INTO webhook_deliveries_new
    (id, user_id, event_id, url, body, status, attempts, next_attempt_at, last_error,
     created_at, finished_at)
SELECT id, user_id, event_id, url, body, status, attempts, next_attempt_at, last_error,
       created_at, finished_at
FROM webhook_deliveries;
DELETE FROM sqlite_sequence WHERE name = 'webhook_deliveries_new';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'webhook_deliveries_new', seq FROM sqlite_sequence WHERE name = 'webhook_deliveries';

CREATE TABLE webhook_attempts_new (
    delivery_id INTEGER NOT NULL REFERENCES webhook_deliveries_new(id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status_code INTEGER,
    error       TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
INSERT INTO webhook_attempts_new (delivery_id, attempt, at, status_code, error, duration_ms)
SELECT delivery_id, attempt, at, status_code, error, duration_ms FROM webhook_attempts;

DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
ALTER TABLE webhook_deliveries_new RENAME TO webhook_deliveries;
ALTER TABLE webhook_attempts_new RENAME TO webhook_attempts;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
