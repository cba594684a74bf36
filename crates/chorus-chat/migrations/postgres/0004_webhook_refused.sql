-- A webhook delivery whose target is not allowed (a private, loopback or otherwise
-- internal address) is recorded as `refused`: nothing was sent, and it is not retried.
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_status_check;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_status_check
    CHECK (status IN ('pending', 'delivered', 'failed', 'refused'));
