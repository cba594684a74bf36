-- The application's logouts of a user (gateway mode): each one moves the user's epoch
-- on, and a socket or cached identity the connect proxy vouched for under an earlier
-- epoch no longer counts, on any node. `proxy_logouts.logouts` numbers every logout in
-- commit order (its row is locked by each); `users.proxy_logout` is the number of the
-- user's last one (0: never), so a node that read it before asking the
-- application knows whether the user was logged out while it asked.
ALTER TABLE users ADD COLUMN proxy_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN proxy_logout BIGINT NOT NULL DEFAULT 0;
CREATE TABLE proxy_logouts (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    logouts BIGINT NOT NULL
);
INSERT INTO proxy_logouts (id, logouts) VALUES (1, 0);
-- Logouts of subjects Chorus has no user for yet: a first sign-in whose question to the
-- application was in flight meanwhile asks again. Kept a few minutes (`at`, ms).
CREATE TABLE proxy_unseen_logouts (
    name   TEXT PRIMARY KEY,
    logout BIGINT NOT NULL,
    at     BIGINT NOT NULL
);
