//! Reads asked by many connections at once, answered together: while one query of a
//! kind runs, the keys asked meanwhile wait, and the next query asks for all of them.
//! A connect storm (a deploy, a node failover: thousands of distinct users at once)
//! then costs a few queries of hundreds of keys instead of a round trip to a database
//! thread per connection and kind; a lone request runs at once, as its own query.
//!
//! Nothing is kept: every answer comes from a query that started after it was asked, so
//! it is as fresh as a read of its own (a token revoked, a membership changed, before
//! the request is seen by it). There is no invalidation to get wrong.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use std::pin::Pin;

use tokio::sync::oneshot;

use crate::error::{ChatError, Result};

/// What a [`Query`] returns.
pub(crate) type Found<K, V> = Pin<Box<dyn Future<Output = Result<Vec<(K, V)>>> + Send>>;

/// One query for many keys: each key found with its value (keys not found left out).
pub(crate) type Query<K, V> = Arc<dyn Fn(Vec<K>) -> Found<K, V> + Send + Sync>;

/// What a waiting key gets: its value, `None` when the query did not find it, or the
/// query's error (as text: one error answers many callers).
type Answer<V> = std::result::Result<Option<V>, String>;

struct Waiting<K, V> {
    keys: Vec<(K, oneshot::Sender<Answer<V>>)>,
    /// A task is running queries; it takes what waits until nothing does.
    running: bool,
}

/// Lookups of one kind, coalesced ([module docs](self)).
pub(crate) struct Coalesced<K, V> {
    waiting: Arc<Mutex<Waiting<K, V>>>,
    query: Query<K, V>,
    /// Keys per query, at most; 0: no coalescing, each caller runs its own query
    /// (for A/B measurements).
    max_batch: usize,
}

impl<K, V> Coalesced<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    pub(crate) fn new(max_batch: usize, query: Query<K, V>) -> Self {
        Self {
            waiting: Arc::new(Mutex::new(Waiting {
                keys: Vec::new(),
                running: false,
            })),
            query,
            max_batch,
        }
    }

    /// The value of `key`, read by a query that starts after this call.
    pub(crate) async fn get(&self, key: K) -> Result<Option<V>> {
        if self.max_batch == 0 {
            let found = (self.query)(vec![key.clone()]).await?;
            return Ok(found.into_iter().find(|(k, _)| *k == key).map(|(_, v)| v));
        }
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut waiting = lock(&self.waiting);
            waiting.keys.push((key, tx));
            !std::mem::replace(&mut waiting.running, true)
        };
        if start {
            // Its own task: a caller that gives up (its connection closed) does not
            // strand the others' answers.
            tokio::spawn(run(
                self.waiting.clone(),
                self.query.clone(),
                self.max_batch,
            ));
        }
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(ChatError::Internal(anyhow::anyhow!(message))),
            Err(_) => Err(ChatError::Internal(anyhow::anyhow!(
                "a coalesced lookup was dropped"
            ))),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs queries for what waits, `max_batch` keys at a time, until nothing does.
async fn run<K, V>(waiting: Arc<Mutex<Waiting<K, V>>>, query: Query<K, V>, max_batch: usize)
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    loop {
        let batch: Vec<(K, oneshot::Sender<Answer<V>>)> = {
            let mut waiting = lock(&waiting);
            if waiting.keys.is_empty() {
                waiting.running = false;
                return;
            }
            let n = waiting.keys.len().min(max_batch);
            waiting.keys.drain(..n).collect()
        };
        let mut keys: Vec<K> = batch.iter().map(|(k, _)| k.clone()).collect();
        // The same key asked twice (a user's tabs) is read once.
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        keys.retain(|k| seen.insert(k.clone()));
        match query(keys).await {
            Ok(found) => {
                let found: HashMap<K, V> = found.into_iter().collect();
                for (key, tx) in batch {
                    let _ = tx.send(Ok(found.get(&key).cloned()));
                }
            }
            Err(err) => {
                let message = format!("{err:#}");
                for (_, tx) in batch {
                    let _ = tx.send(Err(message.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_keys_share_a_query_and_a_lone_key_runs_at_once() {
        let queries = Arc::new(AtomicUsize::new(0));
        let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
        let counted = queries.clone();
        let lookups: Coalesced<u32, u32> = Coalesced::new(
            100,
            Arc::new(move |keys: Vec<u32>| {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut gate = gate_rx.clone();
                Box::pin(async move {
                    // Held until released, so the keys asked meanwhile pile up.
                    let _ = gate.wait_for(|open| *open).await;
                    Ok(keys
                        .into_iter()
                        .filter(|k| k % 2 == 0)
                        .map(|k| (k, k * 10))
                        .collect())
                })
            }),
        );
        let lookups = Arc::new(lookups);
        let first = tokio::spawn({
            let l = lookups.clone();
            async move { l.get(2).await.unwrap() }
        });
        // The first query is running (held): these wait for the next one.
        while queries.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let rest: Vec<_> = [4, 5, 4, 6]
            .into_iter()
            .map(|k| {
                let l = lookups.clone();
                tokio::spawn(async move { l.get(k).await.unwrap() })
            })
            .collect();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        gate_tx.send(true).unwrap();
        assert_eq!(first.await.unwrap(), Some(20));
        let mut answers = Vec::new();
        for r in rest {
            answers.push(r.await.unwrap());
        }
        assert_eq!(answers, vec![Some(40), None, Some(40), Some(60)]);
        assert_eq!(queries.load(Ordering::SeqCst), 2, "one query for the four");
        // Idle again: a lone key is its own query.
        assert_eq!(lookups.get(8).await.unwrap(), Some(80));
        assert_eq!(queries.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_error_answers_every_key_of_its_query() {
        let lookups: Coalesced<u32, u32> = Coalesced::new(
            10,
            Arc::new(|_keys: Vec<u32>| {
                Box::pin(async { Err(ChatError::Internal(anyhow::anyhow!("database away"))) })
            }),
        );
        let err = lookups.get(1).await.unwrap_err();
        assert!(matches!(&err, ChatError::Internal(e) if e.to_string().contains("database away")));
    }
}
