//! Striped async locks that keep the events about one thing in commit order.
//!
//! Events are published after the write they describe, so two writes to the same thread
//! (or the same user's read cursor) could commit in one order and publish in the other,
//! leaving clients with the older state. A writer holds its key's stripe from before
//! the write until its events are handed to the engine. Stripes bound the memory (no
//! per-key map to clean up); unrelated keys sharing a stripe only wait a little.

use tokio::sync::{Mutex, MutexGuard};

pub(crate) struct Gate {
    stripes: Box<[Mutex<()>]>,
}

impl Gate {
    pub(crate) fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes.max(1)).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Waits for `key`'s stripe. A tokio mutex: it is held across the write's awaits.
    pub(crate) async fn lock(&self, key: i64) -> MutexGuard<'_, ()> {
        let stripe = key.rem_euclid(self.stripes.len() as i64) as usize;
        self.stripes[stripe].lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;

    #[tokio::test]
    async fn same_key_waits_other_stripes_do_not() {
        let gate = Gate::new(4);
        let held = gate.lock(1).await;
        assert!(
            gate.stripes[1].try_lock().is_err(),
            "key 1 maps to stripe 1"
        );
        // Key 2 is on another stripe: free.
        drop(gate.lock(2).await);
        // Negative keys map into range too.
        drop(gate.lock(-2).await);
        drop(held);
        drop(gate.lock(5).await);
    }
}
