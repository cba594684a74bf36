-- One-time sign-in links (issue 22): a server admin hands a new user a link instead of
-- a long-lived token. Only the SHA-256 of the link's code is stored, as for tokens.
-- Exchanging the code sets `used_at` (in the transaction that issues the token): a
-- link works once, and not from `expires_at` on.
CREATE TABLE sign_in_links (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    code_hash  TEXT NOT NULL UNIQUE,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_by INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX sign_in_links_user ON sign_in_links(user_id);
