-- Chorus schema, PostgreSQL. Mirrors migrations/sqlite/0001 with the same column
-- representation (times as Unix milliseconds, enums as text, mentions as a JSON array
-- in text), so both backends read the same rows.

CREATE TABLE users (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('human', 'agent')),
    webhook_url  TEXT,
    status_text  TEXT NOT NULL DEFAULT '',
    is_admin     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   BIGINT NOT NULL
);

CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    label      TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);
CREATE INDEX tokens_user ON tokens(user_id);

CREATE TABLE workspaces (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL,
    created_by BIGINT NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL
);

CREATE TABLE workspace_members (
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    user_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role         TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'guest')),
    joined_at    BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX workspace_members_user ON workspace_members(user_id);

CREATE TABLE channels (
    id           BIGSERIAL PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    topic        TEXT NOT NULL DEFAULT '',
    kind         TEXT NOT NULL CHECK (kind IN ('public', 'private', 'dm')),
    policy       TEXT NOT NULL DEFAULT 'all',
    dm_key       TEXT,
    created_by   BIGINT NOT NULL REFERENCES users(id),
    created_at   BIGINT NOT NULL
);
CREATE UNIQUE INDEX channels_name ON channels(workspace_id, name) WHERE kind <> 'dm';
CREATE UNIQUE INDEX channels_dm ON channels(workspace_id, dm_key) WHERE kind = 'dm';

CREATE TABLE channel_members (
    channel_id BIGINT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    joined_at  BIGINT NOT NULL,
    last_read  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, user_id)
);
CREATE INDEX channel_members_user ON channel_members(user_id);

CREATE TABLE messages (
    id              BIGSERIAL PRIMARY KEY,
    channel_id      BIGINT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    author_id       BIGINT NOT NULL REFERENCES users(id),
    text            TEXT NOT NULL,
    thread_id       BIGINT REFERENCES messages(id),
    mentions        TEXT NOT NULL DEFAULT '[]',
    created_at      BIGINT NOT NULL,
    edited_at       BIGINT,
    deleted         BOOLEAN NOT NULL DEFAULT FALSE,
    idempotency_key TEXT
);
CREATE INDEX messages_channel ON messages(channel_id, thread_id, id);
CREATE INDEX messages_thread ON messages(thread_id) WHERE thread_id IS NOT NULL;
CREATE UNIQUE INDEX messages_idempotency ON messages(author_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
