-- Turns and receipts (issue 19). One row per agent a message woke (its turn at the
-- message), written in the message's transaction: what the agent reported about it
-- (`state`, its receipt: received, working, done, declined; NULL until it reports),
-- and how the turn ended when someone else ended it (`outcome`: passed, cancelled).
-- `due_at`: round_robin only, when the turn passes to the next agent unless the agent
-- reported `working` (cleared then); the turn sweep reads it.
CREATE TABLE message_turns (
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    agent_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL,
    woken_at   INTEGER NOT NULL,
    state      TEXT CHECK (state IN ('received', 'working', 'done', 'declined')),
    updated_at INTEGER,
    due_at     INTEGER,
    outcome    TEXT CHECK (outcome IN ('passed', 'cancelled')),
    PRIMARY KEY (message_id, agent_id)
);
CREATE INDEX message_turns_due ON message_turns(due_at) WHERE due_at IS NOT NULL;
CREATE INDEX message_turns_agent ON message_turns(agent_id, channel_id, message_id);

-- The receipts summary each message carries (`[{user_id, state, updated_at}]`),
-- rewritten with each receipt, so reading a message needs no more queries.
ALTER TABLE messages ADD COLUMN receipts TEXT NOT NULL DEFAULT '[]';

-- Per-channel settings; NULL: the server's default.
ALTER TABLE channels ADD COLUMN stream_rollup_ms INTEGER;
ALTER TABLE channels ADD COLUMN turn_timeout_ms INTEGER;
ALTER TABLE channels ADD COLUMN loop_guard_run INTEGER;
ALTER TABLE channels ADD COLUMN loop_guard_per_minute INTEGER;
