//! The domain's view of the API types: every resource and id is `chorus-api`'s (the
//! one owner of the JSON), re-exported so the domain and its storage name them
//! `crate::model::*`; the validation rules for names, emoji and one-line text are the
//! domain's own.

pub use chorus_api::model::*;

use crate::error::{ChatError, bad};

/// Checks a one-line text field someone typed (a workspace's or key's name, a display
/// name, a topic, a description, a secret): no control character (`char::is_control`:
/// C0 with tab and line breaks, DEL, C1). Such a field is shown on one line, and
/// PostgreSQL stores no NUL in text. The refusal names the field (`what`).
pub fn check_text_field(what: &str, value: &str) -> Result<(), ChatError> {
    if value.chars().any(char::is_control) {
        return Err(bad(format!("{what} must not contain control characters")));
    }
    Ok(())
}

/// Checks free text that may hold any other character (a message's text, which has
/// lines; an event's type, which the metrics escape): no NUL (U+0000), which PostgreSQL
/// cannot store in text. The refusal names the field (`what`).
pub fn check_no_nul(what: &str, value: &str) -> Result<(), ChatError> {
    if value.contains('\0') {
        return Err(bad(format!(
            "{what} must not contain the NUL character (U+0000)"
        )));
    }
    Ok(())
}

/// Checks a user name: `[a-z0-9_.-]{1,32}`.
pub fn valid_user_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// Checks a reaction's emoji: 1 to 64 bytes, no whitespace or control characters. The
/// text is otherwise free (a Unicode emoji, or a `:shortcode:`).
pub fn valid_emoji(emoji: &str) -> bool {
    (1..=64).contains(&emoji.len())
        && !emoji
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_invisible_format(c))
}

/// Bidirectional overrides and similar: invisible characters that would let two
/// reactions look alike or reorder the text around them.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Checks a channel name: `[a-z0-9_-]{1,80}`.
pub fn valid_channel_name(name: &str) -> bool {
    (1..=80).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}
