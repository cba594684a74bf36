-- A registered command's invocation sent with an `Idempotency-Key`: a retry with the
-- same key (by the same user) is answered as the first was and delivers nothing.
-- No foreign keys: the row only remembers an answer, whatever became of the command.
CREATE TABLE command_invocations (
    user_id         INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL,
    channel_id      INTEGER NOT NULL,
    command_id      INTEGER NOT NULL,
    answer          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (user_id, idempotency_key)
);
