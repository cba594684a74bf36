//! Scope names: `kind:id`, e.g. `channel:42`, `user:7`, `topic:deploys`.

use std::sync::Arc;

/// A validated scope name. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("a scope is `kind:id` with kind in [a-z_] and a non-empty id")]
    Malformed,
    #[error("a scope name is at most {MAX_SCOPE_LEN} bytes")]
    TooLong,
}

/// Longest accepted scope name, in bytes.
pub const MAX_SCOPE_LEN: usize = 160;

impl Scope {
    pub fn parse(name: &str) -> Result<Self, ScopeError> {
        if name.len() > MAX_SCOPE_LEN {
            return Err(ScopeError::TooLong);
        }
        let (kind, id) = name.split_once(':').ok_or(ScopeError::Malformed)?;
        let kind_ok = !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        let id_ok = !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if kind_ok && id_ok {
            Ok(Self(Arc::from(name)))
        } else {
            Err(ScopeError::Malformed)
        }
    }

    /// Builds `kind:id` from parts the caller already trusts (e.g. `("channel", 42)`).
    pub fn of(kind: &str, id: impl std::fmt::Display) -> Self {
        Self(Arc::from(format!("{kind}:{id}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the first `:`, used for authorization and metrics.
    pub fn kind(&self) -> &str {
        self.0.split_once(':').map_or("", |(k, _)| k)
    }

    /// The part after the first `:`.
    pub fn id(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, id)| id)
    }
}

/// As its name; deserializing validates like [`Scope::parse`].
impl serde::Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&name).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let s = Scope::parse("channel:42").expect("valid");
        assert_eq!((s.kind(), s.id()), ("channel", "42"));
        assert!(Scope::parse("topic:deploys.prod").is_ok());
        for bad in [
            "", "channel", ":1", "channel:", "Chan:1", "a b:1", "x:1 2", "x:é",
        ] {
            assert_eq!(Scope::parse(bad), Err(ScopeError::Malformed), "{bad}");
        }
        assert_eq!(
            Scope::parse(&format!("t:{}", "a".repeat(200))),
            Err(ScopeError::TooLong)
        );
    }
}
