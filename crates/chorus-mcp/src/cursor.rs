//! The cursor of `wait_for_messages`: for each channel the agent follows, the offset of
//! the last event of `channel:{id}` it has been handed (or passed over). Offsets are the
//! server's event-log positions, strictly increasing per scope, so "events after the
//! cursor" never repeats one and survives reconnects, restarts of the MCP server and a
//! switch between its transports. It is opaque to agents: `w1.` and the base64url of
//! `channel:offset` pairs; anything else is refused as a bad cursor.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chorus_client::ChannelId;

use crate::error::ToolError;

const PREFIX: &str = "w1.";
/// A cursor naming more channels than this is not one we issued (a connection holds at
/// most 1,000 subscriptions by default; this leaves room for larger settings).
const MAX_CHANNELS: usize = 10_000;

/// Per channel, the offset after which `wait_for_messages` looks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor(pub BTreeMap<ChannelId, u64>);

impl Cursor {
    pub fn encode(&self) -> String {
        let plain: Vec<String> = self
            .0
            .iter()
            .map(|(channel, offset)| format!("{channel}:{offset}"))
            .collect();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(plain.join(",")))
    }

    pub fn decode(text: &str) -> Result<Self, ToolError> {
        let bad = || {
            ToolError::bad_cursor(
                "not a cursor this server issued: pass the `cursor` of the previous \
                 wait_for_messages result unchanged, or omit it to start from now",
            )
        };
        let body = text.strip_prefix(PREFIX).ok_or_else(bad)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?;
        let plain = String::from_utf8(bytes).map_err(|_| bad())?;
        let mut map = BTreeMap::new();
        if plain.is_empty() {
            return Ok(Self(map));
        }
        for pair in plain.split(',') {
            let (channel, offset) = pair.split_once(':').ok_or_else(bad)?;
            let channel: i64 = channel.parse().map_err(|_| bad())?;
            let offset: u64 = offset.parse().map_err(|_| bad())?;
            if channel <= 0 || map.insert(ChannelId(channel), offset).is_some() {
                return Err(bad());
            }
            if map.len() > MAX_CHANNELS {
                return Err(bad());
            }
        }
        Ok(Self(map))
    }
}

/// `channel:{id}` → the channel, for the scopes this crate follows.
pub fn channel_of(scope: &str) -> Option<ChannelId> {
    let id: i64 = scope.strip_prefix("channel:")?.parse().ok()?;
    (id > 0).then_some(ChannelId(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let cursor = Cursor(BTreeMap::from([
            (ChannelId(3), 1_763_890_000_123_457),
            (ChannelId(12), 7),
        ]));
        let text = cursor.encode();
        assert!(text.starts_with("w1."));
        assert_eq!(Cursor::decode(&text), Ok(cursor));
        assert_eq!(
            Cursor::decode(&Cursor::default().encode()),
            Ok(Cursor::default())
        );
    }

    #[test]
    fn anything_else_is_a_bad_cursor() {
        let encoded = |plain: &str| format!("w1.{}", URL_SAFE_NO_PAD.encode(plain));
        for text in [
            String::new(),
            "garbage".to_owned(),
            "w1.***".to_owned(),
            "w2.MzoxMg".to_owned(),
            encoded("3"),
            encoded("3:x"),
            encoded("x:3"),
            encoded("-3:1"),
            encoded("3:1,3:2"),
            encoded("3:-1"),
        ] {
            let err = Cursor::decode(&text).expect_err(&text);
            assert_eq!(err.code, "bad_cursor", "{text}");
        }
    }

    #[test]
    fn only_channel_scopes_are_followed() {
        assert_eq!(channel_of("channel:42"), Some(ChannelId(42)));
        assert_eq!(channel_of("user:42"), None);
        assert_eq!(channel_of("channel:x"), None);
        assert_eq!(channel_of("channel:0"), None);
    }
}
