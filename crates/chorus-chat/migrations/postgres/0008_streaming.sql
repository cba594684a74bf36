-- Streaming messages (issue 19): a message is `complete` (every message before this
-- migration), `streaming` (its author is still appending text) or `aborted`.
-- `stream_seq` counts the roll-ups written so far (the `seq` of the last
-- `message.delta`); `stream_at` is when the stream last wrote (the idle sweep reads it).
ALTER TABLE messages ADD COLUMN state TEXT NOT NULL DEFAULT 'complete'
    CHECK (state IN ('complete', 'streaming', 'aborted'));
ALTER TABLE messages ADD COLUMN stream_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN stream_at BIGINT;
CREATE INDEX messages_streaming ON messages(stream_at) WHERE state = 'streaming';
