-- The application's logouts of a user (gateway mode): each one moves the user's epoch
-- on, and a socket or cached identity the connect proxy vouched for under an earlier
-- epoch no longer counts, on any node. `proxy_epoch_at`: when the last one ended (ms).
ALTER TABLE users ADD COLUMN proxy_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN proxy_epoch_at BIGINT;
