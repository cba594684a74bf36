-- One-time sign-in links, PostgreSQL. Mirrors migrations/sqlite/0012: only the SHA-256
-- of a link's code is stored; exchanging it sets `used_at` in the transaction that
-- issues the token, so a link works once, and not from `expires_at` on.
CREATE TABLE sign_in_links (
    id         BIGSERIAL PRIMARY KEY,
    code_hash  TEXT NOT NULL UNIQUE,
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_by BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX sign_in_links_user ON sign_in_links(user_id);
