//! Opaque API tokens: `chr_` + 32 random bytes (base64url); server keys the same with
//! `chk_`, one-time sign-in links' codes with `chs_`. Only their SHA-256 is stored.

use base64::Engine as _;
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "chr_";

/// The prefix of server keys (`service::keys`): a backend's credentials, not a user's.
pub const KEY_PREFIX: &str = "chk_";

/// Mints a new token. Returns `(token, hash)`; hand out the token, store the hash.
pub fn mint() -> (String, String) {
    mint_with(PREFIX)
}

/// The prefix of one-time sign-in links' codes (`service::sign_in_links`).
pub const SIGN_IN_PREFIX: &str = "chs_";

/// Mints a sign-in link's code, as [`mint`] does a token.
pub fn mint_sign_in_code() -> (String, String) {
    mint_with(SIGN_IN_PREFIX)
}

/// Mints a new server key, as [`mint`] does a token.
pub fn mint_key() -> (String, String) {
    mint_with(KEY_PREFIX)
}

fn mint_with(prefix: &str) -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = hash(&token);
    (token, hash)
}

/// Mints a webhook signing secret: `whsec_` + 32 random bytes (base64url). Unlike API
/// tokens it is stored as is: signing needs the secret itself.
pub fn mint_webhook_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_unique_and_hashes_stable() {
        let (a, ha) = super::mint();
        let (b, _) = super::mint();
        assert_ne!(a, b);
        assert!(a.starts_with(super::PREFIX));
        assert_eq!(super::hash(&a), ha);
    }
}
