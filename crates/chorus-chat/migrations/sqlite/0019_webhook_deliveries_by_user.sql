-- A webhook claim made while users are busy (`claim_due_webhooks`) walks the users
-- with pending deliveries, one seek each, skips the busy ones and reads each other
-- user's oldest due deliveries, all through this index, instead of reading past the
-- busy users' whole backlogs in the (status, next_attempt_at) order. Every entry of
-- an SQLite index ends with the rowid (`id`), the ties' order.
CREATE INDEX webhook_deliveries_users_due ON webhook_deliveries(status, user_id, next_attempt_at);
