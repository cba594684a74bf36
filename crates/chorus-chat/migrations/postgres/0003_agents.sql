-- Agent-aware delivery (SPEC §4), PostgreSQL. Mirrors migrations/sqlite/0003 with the
-- same column representation (times as Unix milliseconds, enums as text).

-- The secret that signs an agent's webhook requests (HMAC-SHA256).
ALTER TABLE users ADD COLUMN webhook_secret TEXT;

-- Agents are few: a channel's agent members are found from them, not by scanning
-- every member of a large channel on each message.
CREATE INDEX users_agents ON users(id) WHERE kind = 'agent';

-- Per-channel user lists of the `on_duty` ('on_duty') and `custom` ('wake') policies.
CREATE TABLE channel_delivery_lists (
    channel_id BIGINT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    list       TEXT NOT NULL CHECK (list IN ('on_duty', 'wake')),
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (channel_id, list, user_id)
);

-- Who observes the workspace's `on_duty` channels.
CREATE TABLE workspace_observers (
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    user_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (workspace_id, user_id)
);

-- `round_robin` turn state: the agent woken last in the channel.
CREATE TABLE channel_turns (
    channel_id BIGINT PRIMARY KEY REFERENCES channels(id) ON DELETE CASCADE,
    last_woken BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE
);

-- One row per (receiver, event): the same event is never queued twice for an agent.
CREATE TABLE webhook_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    user_id         BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    event_id        TEXT NOT NULL,
    url             TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    UNIQUE (user_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);

CREATE TABLE webhook_attempts (
    delivery_id BIGINT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    status_code BIGINT,
    error       TEXT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
