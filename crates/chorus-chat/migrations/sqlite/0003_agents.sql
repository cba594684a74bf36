-- Agent-aware delivery (SPEC §4): on-duty and wake lists, observers, round-robin turn
-- state, webhook secrets and the durable webhook queue. Timestamps are Unix
-- milliseconds. Plain SQL a PostgreSQL migration can mirror.

-- The secret that signs an agent's webhook requests (HMAC-SHA256).
ALTER TABLE users ADD COLUMN webhook_secret TEXT;

-- Agents are few: a channel's agent members are found from them, not by scanning
-- every member of a large channel on each message.
CREATE INDEX users_agents ON users(id) WHERE kind = 'agent';

-- Per-channel user lists of the `on_duty` ('on_duty') and `custom` ('wake') policies.
CREATE TABLE channel_delivery_lists (
    channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    list       TEXT NOT NULL CHECK (list IN ('on_duty', 'wake')),
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (channel_id, list, user_id)
);

-- Who observes the workspace's `on_duty` channels.
CREATE TABLE workspace_observers (
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (workspace_id, user_id)
);

-- `round_robin` turn state: the agent woken last in the channel.
CREATE TABLE channel_turns (
    channel_id INTEGER PRIMARY KEY REFERENCES channels(id) ON DELETE CASCADE,
    last_woken INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE
);

-- One row per (receiver, event): the same event is never queued twice for an agent.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    event_id        TEXT NOT NULL,
    url             TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    UNIQUE (user_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);

CREATE TABLE webhook_attempts (
    delivery_id INTEGER NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status_code INTEGER,
    error       TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
