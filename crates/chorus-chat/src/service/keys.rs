//! Server keys: credentials for a backend that publishes events or reads the stats,
//! without the admin token's power over users. Created, listed and deleted by server
//! admins; a key's secret (`chk_…`) is shown once and stored as its SHA-256.

pub use chorus_api::requests::CreateServerKey;

use super::Chat;
use crate::error::{ChatError, Result, bad, forbidden, not_found};
use crate::model::{User, check_text_field};
use crate::store::{KeyPermission, NewServerKey, ServerKey, ServerKeyId};
use crate::token;

/// Most prefixes one key may carry.
const MAX_PREFIXES: usize = 32;
/// A prefix is at most a whole scope name.
const MAX_PREFIX_BYTES: usize = 160;

/// A new key and its secret: the only time the secret is shown.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key: ServerKey,
    pub secret: String,
}

impl Chat {
    /// Creates a server key (server admins only).
    pub async fn create_server_key(&self, caller: &User, req: CreateServerKey) -> Result<NewKey> {
        admin_only(caller)?;
        let name = req.name.trim().to_owned();
        if name.is_empty() || name.len() > 80 {
            return Err(bad("name must be 1 to 80 bytes"));
        }
        check_text_field("name", &name)?;
        let mut permissions = req.permissions;
        permissions.sort();
        permissions.dedup();
        if permissions.is_empty() {
            return Err(bad(
                "permissions must name at least one of publish, stats:read, sessions:revoke",
            ));
        }
        if let Some(prefixes) = &req.publish_prefixes {
            if !permissions.contains(&KeyPermission::Publish) {
                return Err(bad("publish_prefixes needs the publish permission"));
            }
            if prefixes.is_empty() || prefixes.len() > MAX_PREFIXES {
                return Err(bad(format!(
                    "publish_prefixes must hold 1 to {MAX_PREFIXES} prefixes (absent: any scope)"
                )));
            }
            if let Some(wrong) = prefixes.iter().find(|p| !valid_prefix(p)) {
                return Err(bad(format!(
                    "publish prefix {wrong:?} must be a scope kind, a colon and optionally the \
                     start of an id (e.g. topic:orders.)"
                )));
            }
        }
        let (secret, hash) = token::mint_key();
        let key = self
            .store
            .create_server_key(NewServerKey {
                name,
                hash,
                permissions,
                publish_prefixes: req.publish_prefixes,
            })
            .await?;
        Ok(NewKey { key, secret })
    }

    /// Every key, without secrets (server admins only).
    pub async fn server_keys(&self, caller: &User) -> Result<Vec<ServerKey>> {
        admin_only(caller)?;
        self.store.server_keys().await
    }

    /// Deletes a key; it stops working at once (server admins only).
    pub async fn delete_server_key(&self, caller: &User, id: ServerKeyId) -> Result<()> {
        admin_only(caller)?;
        if self.store.delete_server_key(id).await? {
            Ok(())
        } else {
            Err(not_found("no such server key"))
        }
    }

    /// The key a `chk_…` secret is. Not cached: a deleted key fails on its next use.
    pub async fn authenticate_server_key(&self, secret: &str) -> Result<ServerKey> {
        self.store
            .server_key_by_hash(&token::hash(secret))
            .await?
            .ok_or_else(|| ChatError::Unauthorized("unknown or deleted server key".into()))
    }
}

fn admin_only(caller: &User) -> Result<()> {
    if caller.is_admin {
        Ok(())
    } else {
        Err(forbidden("only server admins manage server keys"))
    }
}

/// `kind:` then the start of an id, in the characters of a scope name.
fn valid_prefix(prefix: &str) -> bool {
    let Some((kind, rest)) = prefix.split_once(':') else {
        return false;
    };
    prefix.len() <= MAX_PREFIX_BYTES
        && !kind.is_empty()
        && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefixes_name_a_scope_kind() {
        for ok in ["topic:", "topic:orders.", "channel:4", "thread:1:2"] {
            assert!(super::valid_prefix(ok), "{ok}");
        }
        for wrong in ["", "topic", ":x", "Topic:x", "topic:a b", "topic:ü"] {
            assert!(!super::valid_prefix(wrong), "{wrong}");
        }
    }
}
