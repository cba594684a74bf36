-- Collaboration: reactions, pins, thread summaries on roots, mention index, last_seen.
-- Mirrors migrations/sqlite/0002. No backfill: a PostgreSQL database starts empty at
-- 0001, so there are no earlier rows to derive mentions or thread summaries from.

CREATE TABLE reactions (
    message_id BIGINT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    emoji      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- Insertion order, the tie-breaker SQLite's rowid provides.
    seq        BIGSERIAL NOT NULL,
    PRIMARY KEY (message_id, user_id, emoji)
);
CREATE INDEX reactions_user ON reactions(user_id);

CREATE TABLE pins (
    channel_id BIGINT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    message_id BIGINT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    pinned_by  BIGINT NOT NULL REFERENCES users(id),
    pinned_at  BIGINT NOT NULL,
    PRIMARY KEY (channel_id, message_id)
);
CREATE INDEX pins_message ON pins(message_id);

-- Who a message mentions, one row per user: what unread mention counts are made of.
-- `messages.mentions` stays the message's own copy.
CREATE TABLE message_mentions (
    message_id BIGINT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    channel_id BIGINT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    PRIMARY KEY (message_id, user_id)
);
CREATE INDEX message_mentions_user ON message_mentions(user_id, channel_id, message_id);
CREATE INDEX message_mentions_channel ON message_mentions(channel_id);

-- A thread's summary lives on its root, updated in the transaction that adds or
-- deletes a reply.
ALTER TABLE messages ADD COLUMN reply_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN last_reply_at BIGINT;

-- When the user was last connected (set when they come online and when they go offline).
ALTER TABLE users ADD COLUMN last_seen BIGINT;
