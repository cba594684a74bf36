-- Credentials with a lifecycle: API tokens get an id (what revoking names, and what
-- the realtime engine closes a token's sockets by), a name, an optional expiry and a
-- coarse last use; users can be deactivated.
--
-- SQLite cannot add a primary key column, so `tokens` is rebuilt: existing tokens keep
-- their hash and owner, are numbered in the order they were created, and are named
-- after their old label ("default" for the token issued with the user, or none).

CREATE TABLE tokens_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    hash         TEXT NOT NULL UNIQUE,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER
);
INSERT INTO tokens_new (hash, user_id, name, created_at)
SELECT hash, user_id, CASE WHEN label IN ('', 'created') THEN 'default' ELSE label END, created_at
FROM tokens
ORDER BY created_at, rowid;
DROP TABLE tokens;
ALTER TABLE tokens_new RENAME TO tokens;
CREATE INDEX tokens_user ON tokens(user_id, id);

-- When the user was deactivated; NULL while active. A deactivated user's tokens are
-- refused and their messages stay.
ALTER TABLE users ADD COLUMN deactivated_at INTEGER;
