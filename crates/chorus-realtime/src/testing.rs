//! Test support shared by the engine's unit tests: an application ([`TestHooks`]) whose
//! answers a test sets, and can hold in the middle of an authorization ([`Gate`]).

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::hooks::{HookError, SessionAuth, SessionHooks};
use crate::{Scope, UserKey};

/// Every scope readable but those denied; `initial` on connect; `refresh` answers what
/// was set with [`TestHooks::refresh_to`]; every credential stands but those revoked.
#[derive(Default)]
pub(crate) struct TestHooks {
    pub initial: Vec<Scope>,
    denied: Mutex<HashSet<Scope>>,
    refreshed: Mutex<Option<SessionAuth>>,
    /// Credentials that no longer stand.
    revoked: Mutex<HashSet<i64>>,
    /// The credentials asked about, in order.
    pub asked: Mutex<Vec<i64>>,
    /// When armed, the next `authorize_subscribe` waits here.
    pub gate: Gate,
}

impl TestHooks {
    pub fn with_initial(initial: Vec<Scope>) -> Self {
        Self {
            initial,
            ..Self::default()
        }
    }

    pub fn deny(&self, scope: &Scope) {
        lock(&self.denied).insert(scope.clone());
    }

    /// The credential no longer stands.
    pub fn revoke(&self, credential: i64) {
        lock(&self.revoked).insert(credential);
    }

    /// What the next `refresh` answers.
    pub fn refresh_to(&self, auth: SessionAuth) {
        *lock(&self.refreshed) = Some(auth);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Holds one authorization between reading its answer and returning it, so a test can
/// change access exactly then.
#[derive(Default)]
pub(crate) struct Gate {
    armed: AtomicBool,
    entered: Notify,
    release: Notify,
}

impl Gate {
    /// The next authorization will wait for [`open`](Self::open).
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Resolves once an armed authorization is waiting.
    pub async fn entered(&self) {
        self.entered.notified().await;
    }

    /// Lets the waiting authorization answer (with what the hooks say by then).
    pub fn open(&self) {
        self.release.notify_one();
    }

    async fn pass(&self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            self.release.notified().await;
        }
    }
}

#[async_trait]
impl SessionHooks for TestHooks {
    async fn initial_scopes(&self, _user: UserKey) -> Result<Vec<Scope>, HookError> {
        Ok(self.initial.clone())
    }

    async fn authorize_subscribe(
        &self,
        _user: UserKey,
        _roles: &[String],
        scope: &Scope,
    ) -> Result<(), HookError> {
        // The answer is read first: a gated authorization answers with the access the
        // user had when it was asked, like a database read that predates a change.
        let denied = lock(&self.denied).contains(scope);
        self.gate.pass().await;
        if denied {
            return Err(HookError::Forbidden("denied".into()));
        }
        Ok(())
    }

    async fn credential_stands(&self, _user: UserKey, credential: i64) -> Result<bool, HookError> {
        lock(&self.asked).push(credential);
        Ok(!lock(&self.revoked).contains(&credential))
    }

    async fn typing(&self, _: UserKey, _: i64, _: Option<i64>) -> Result<(), HookError> {
        Ok(())
    }

    async fn refresh(
        &self,
        _user: UserKey,
        _token: &str,
        _client: Option<std::net::IpAddr>,
    ) -> Result<SessionAuth, HookError> {
        lock(&self.refreshed)
            .take()
            .ok_or_else(|| HookError::Forbidden("no such token".into()))
    }
}
