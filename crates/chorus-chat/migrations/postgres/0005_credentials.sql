-- Credentials with a lifecycle, PostgreSQL. Mirrors migrations/sqlite/0005: tokens get
-- an id (what revoking names, and what the realtime engine closes a token's sockets
-- by), a name, an optional expiry and a coarse last use; users can be deactivated.
-- Existing tokens are numbered in the order they were created and named after their
-- old label ("default" for the token issued with the user, or none).

ALTER TABLE tokens DROP CONSTRAINT tokens_pkey;
ALTER TABLE tokens ADD COLUMN id BIGINT;
CREATE SEQUENCE tokens_id_seq OWNED BY tokens.id;
UPDATE tokens SET id = numbered.n
FROM (SELECT hash, row_number() OVER (ORDER BY created_at, hash) AS n FROM tokens) AS numbered
WHERE tokens.hash = numbered.hash;
SELECT setval('tokens_id_seq', COALESCE((SELECT MAX(id) FROM tokens), 0) + 1, false);
ALTER TABLE tokens ALTER COLUMN id SET DEFAULT nextval('tokens_id_seq');
ALTER TABLE tokens ALTER COLUMN id SET NOT NULL;
ALTER TABLE tokens ADD PRIMARY KEY (id);
ALTER TABLE tokens ADD CONSTRAINT tokens_hash_key UNIQUE (hash);

ALTER TABLE tokens RENAME COLUMN label TO name;
UPDATE tokens SET name = 'default' WHERE name IN ('', 'created');
ALTER TABLE tokens ALTER COLUMN name DROP DEFAULT;
ALTER TABLE tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE tokens ADD COLUMN last_used_at BIGINT;
DROP INDEX tokens_user;
CREATE INDEX tokens_user ON tokens(user_id, id);

-- When the user was deactivated; NULL while active.
ALTER TABLE users ADD COLUMN deactivated_at BIGINT;
