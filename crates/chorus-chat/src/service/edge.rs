//! What the edge (chorus-server) needs from storage beyond the user-facing operations,
//! each as one narrow method: the database's health for `/readyz`, the user behind a
//! credential the edge verified itself (the admin token), the periodic trims (the event
//! log, commands' idempotency keys), and the webhook queue as its delivery worker sees
//! it (claim what is due, learn when the next is due, record each attempt). The edge
//! never holds the store: every way in goes through [`Chat`].

use crate::error::Result;
use crate::model::{Timestamp, User, UserId, WebhookAttempt};
use crate::service::Chat;
use crate::store::{AttemptOutcome, ClaimLimits, DueWebhook};

impl Chat {
    /// Deletes the event log's events outside every scope's retention window: older
    /// than the widest age and beyond each scope's last events by the widest count (the
    /// server's window — `max_events`, `max_age` — widened by the namespaces' own; what
    /// a scope's narrower window leaves in the log, its reads leave out). Returns how
    /// many went.
    pub async fn trim_event_log(
        &self,
        max_events: usize,
        max_age: std::time::Duration,
    ) -> Result<u64> {
        let widest = self.namespaces().widest(chorus_realtime::Retention {
            max_events,
            max_age,
        });
        let age = i64::try_from(widest.max_age.as_millis()).unwrap_or(i64::MAX);
        let before = Timestamp(self.now().0.saturating_sub(age));
        self.store.trim_events(widest.max_events, before).await
    }

    /// Forgets the registered commands' idempotency keys older than
    /// [`COMMAND_KEYS_KEPT`](crate::service::COMMAND_KEYS_KEPT). Returns how many went.
    pub async fn forget_command_keys(&self) -> Result<u64> {
        let kept = i64::try_from(crate::service::COMMAND_KEYS_KEPT.as_millis()).unwrap_or(i64::MAX);
        let before = Timestamp(self.now().0.saturating_sub(kept));
        self.store.forget_command_invocations(before).await
    }

    /// One trivial query: whether the database answers (and, on SQLite, can be written).
    pub async fn ping_database(&self) -> Result<()> {
        self.store.ping().await
    }

    /// The user a credential verified by the edge names (deactivated or not: judging
    /// that is the caller's business).
    pub async fn credential_user(&self, id: UserId) -> Result<Option<User>> {
        self.store.user(id).await
    }

    /// Pending webhook deliveries due at `now`, as `limits` say, each leased until
    /// `lease_until` (a crashed attempt is retried after it; a running one is not
    /// claimed twice).
    pub async fn claim_due_webhooks(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limits: &ClaimLimits,
    ) -> Result<Vec<DueWebhook>> {
        self.store
            .claim_due_webhooks(now, lease_until, limits)
            .await
    }

    /// When the earliest pending webhook delivery is due.
    pub async fn next_webhook_due(&self) -> Result<Option<Timestamp>> {
        self.store.next_webhook_due().await
    }

    /// Records one webhook attempt and what it leaves the delivery in.
    pub async fn record_webhook_attempt(
        &self,
        delivery: i64,
        attempt: &WebhookAttempt,
        outcome: AttemptOutcome,
    ) -> Result<()> {
        self.store
            .record_webhook_attempt(delivery, attempt, outcome)
            .await
    }
}
