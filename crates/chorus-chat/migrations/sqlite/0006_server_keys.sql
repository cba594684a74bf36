-- Server keys: credentials for a backend, not a user. `permissions` is a JSON array
-- of names ("publish", "stats:read"); `publish_prefixes` a JSON array of scope
-- prefixes, NULL for any scope. Only the key's SHA-256 is stored.
CREATE TABLE server_keys (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT NOT NULL,
    hash             TEXT NOT NULL UNIQUE,
    permissions      TEXT NOT NULL,
    publish_prefixes TEXT,
    created_at       INTEGER NOT NULL
);
