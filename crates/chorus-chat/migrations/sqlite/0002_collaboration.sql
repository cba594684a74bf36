-- Collaboration: reactions, pins, thread summaries on roots, mention index, last_seen.
-- Timestamps are Unix milliseconds. Plain SQL a PostgreSQL migration can mirror, except
-- the one-off backfill of mention rows (json_each).

CREATE TABLE reactions (
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    emoji      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, user_id, emoji)
);

CREATE TABLE pins (
    channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    pinned_by  INTEGER NOT NULL REFERENCES users(id),
    pinned_at  INTEGER NOT NULL,
    PRIMARY KEY (channel_id, message_id)
);
CREATE INDEX pins_message ON pins(message_id);

-- Who a message mentions, one row per user: what unread mention counts are made of.
-- `messages.mentions` (JSON) stays the message's own copy.
CREATE TABLE message_mentions (
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    PRIMARY KEY (message_id, user_id)
);
CREATE INDEX message_mentions_user ON message_mentions(user_id, channel_id, message_id);

INSERT INTO message_mentions (message_id, user_id, channel_id)
SELECT m.id, j.value, m.channel_id
FROM messages m, json_each(m.mentions) j
WHERE m.deleted = 0 AND j.value IN (SELECT id FROM users);

-- A thread's summary lives on its root, updated in the transaction that adds or
-- deletes a reply.
ALTER TABLE messages ADD COLUMN reply_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN last_reply_at INTEGER;

UPDATE messages SET
    reply_count = (SELECT COUNT(*) FROM messages r
                   WHERE r.channel_id = messages.channel_id AND r.thread_id = messages.id
                     AND r.deleted = 0),
    last_reply_at = (SELECT MAX(r.created_at) FROM messages r
                     WHERE r.channel_id = messages.channel_id AND r.thread_id = messages.id
                       AND r.deleted = 0)
WHERE thread_id IS NULL
  AND EXISTS (SELECT 1 FROM messages r WHERE r.thread_id = messages.id);

-- When the user was last connected (set when they come online and when they go offline).
ALTER TABLE users ADD COLUMN last_seen INTEGER;
