//! Messages as the tools hand them to a model: the fields an agent acts on (who, what,
//! where, which thread), names instead of bare ids, and a character budget so that a
//! result fits the context window it is read into.

use chorus_client::{Message, Timestamp, UserId, UserKind};
use schemars::JsonSchema;
use serde::Serialize;

use crate::agent::Person;

/// A message as a tool returns it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct MessageOut {
    /// The message id: `thread` for a reply, `message_id` for `react`, `after` for
    /// `read_messages`.
    pub id: i64,
    pub channel_id: i64,
    /// The thread's root message, when this is a reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<i64>,
    pub author_id: i64,
    /// The author's user name (what `@name` mentions).
    pub author: String,
    /// The author is an AI agent (answering agents blindly makes two agents talk in
    /// circles).
    #[serde(default, skip_serializing_if = "is_false")]
    pub author_is_agent: bool,
    pub text: String,
    /// The text was cut to fit the character budget (`max_chars`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
    /// RFC 3339.
    pub created_at: String,
    /// The message mentions the caller.
    #[serde(default, skip_serializing_if = "is_false")]
    pub mentions_me: bool,
    /// Replies in this message's thread (read them with `read_messages` and `thread`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reply_count: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionOut>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub edited: bool,
    /// Deleted: the text is gone.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
}

/// One emoji's reactions on a message.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ReactionOut {
    pub emoji: String,
    pub count: i64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// RFC 3339, as the API writes times.
pub fn rfc3339(ts: Timestamp) -> String {
    serde_json::to_value(ts)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl MessageOut {
    pub fn new(message: &Message, author: Person, me: UserId) -> Self {
        Self {
            id: message.id.0,
            channel_id: message.channel_id.0,
            thread_id: message.thread_id.map(|t| t.0),
            author_id: message.author_id.0,
            author: author.name,
            author_is_agent: author.kind == UserKind::Agent,
            text: message.text.clone(),
            truncated: false,
            created_at: rfc3339(message.created_at),
            mentions_me: message.mentions.contains(&me),
            reply_count: message.reply_count,
            reactions: message
                .reactions
                .iter()
                .map(|r| ReactionOut {
                    emoji: r.emoji.clone(),
                    count: r.count,
                })
                .collect(),
            edited: message.edited_at.is_some(),
            deleted: message.deleted,
        }
    }
}

/// What a result may still spend, in characters of its items' JSON.
#[derive(Debug)]
pub struct Budget {
    left: usize,
    taken: usize,
}

impl Budget {
    pub fn new(max_chars: usize) -> Self {
        Self {
            left: max_chars,
            taken: 0,
        }
    }

    /// Takes `item` if it fits. The first item always does, its text cut (and marked
    /// `truncated`) if need be, so that a result is never empty for want of room.
    pub fn take(&mut self, item: &mut MessageOut) -> bool {
        let size = cost(item);
        if size <= self.left {
            self.left -= size;
            self.taken += 1;
            return true;
        }
        if self.taken > 0 {
            return false;
        }
        // Cut the text until the whole item fits (escaping makes a few rounds possible).
        for _ in 0..4 {
            let over = cost(item).saturating_sub(self.left);
            if over == 0 {
                break;
            }
            let keep = item.text.chars().count().saturating_sub(over + 1);
            item.text = item.text.chars().take(keep).collect();
            item.text.push('…');
            item.truncated = true;
        }
        self.left = self.left.saturating_sub(cost(item));
        self.taken += 1;
        true
    }
}

fn cost(item: &MessageOut) -> usize {
    serde_json::to_string(item).map_or(0, |s| s.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> MessageOut {
        MessageOut {
            id: 1,
            channel_id: 2,
            thread_id: None,
            author_id: 3,
            author: "alice".into(),
            author_is_agent: false,
            text: text.into(),
            truncated: false,
            created_at: "2026-01-01T00:00:00Z".into(),
            mentions_me: false,
            reply_count: 0,
            reactions: vec![],
            edited: false,
            deleted: false,
        }
    }

    #[test]
    fn items_are_taken_while_they_fit() {
        let one = cost(&message("hello"));
        let mut budget = Budget::new(one * 2 + 1);
        assert!(budget.take(&mut message("hello")));
        assert!(budget.take(&mut message("hello")));
        assert!(!budget.take(&mut message("hello")));
    }

    #[test]
    fn the_first_item_is_cut_to_fit() {
        let mut budget = Budget::new(150);
        let mut item = message(&"é\"".repeat(500));
        assert!(budget.take(&mut item));
        assert!(item.truncated);
        assert!(cost(&item) <= 150, "{}", cost(&item));
        assert!(item.text.ends_with('…'));
        assert!(!budget.take(&mut message("")));
    }
}
