//! Agent-aware delivery, the side effects: gathering the inputs of [`decide`] for a new
//! message (policy lists, observers, the round-robin turn, advanced atomically), the
//! APIs that edit those lists, agents' webhook settings, and queueing a webhook for a
//! woken agent with no live connection. The decision itself is `delivery.rs`; the
//! queue's worker (outbound HTTP) lives at the server edge.

use std::collections::BTreeSet;

use chorus_api::events::{ChannelListChanged, ObserversChanged};
pub use chorus_api::model::{UserIds, WebhookSettings};
pub use chorus_api::requests::SetWebhook;
use chorus_realtime::Publish;
use serde::Serialize;

use super::Chat;
use super::delivery::{Decision, DeliveryInput, decide};
use super::events::{channel_scope, workspace_scope};
use crate::error::{Result, bad, forbidden, not_found, not_in_channel, not_in_workspace};
use crate::model::*;
use crate::store::{AgentMember, DeliveryList, NewWebhookDelivery, events_only};
use crate::token;

/// What a webhook POSTs: the event as a connection would have received it, plus its
/// id (also in `Chorus-Event-Id`) for deduplication. No `offset`: offsets are positions
/// of live streams, and a webhook is not one.
#[derive(Serialize)]
struct WebhookBody<'a, T: Serialize> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    scope: String,
    wake: bool,
    data: &'a T,
}

const MAX_LIST: usize = 100;
const MIN_SECRET: usize = 16;
const MAX_SECRET: usize = 256;
/// Deliveries listed by `GET /api/v1/users/{id}/webhook-deliveries` at most.
pub const MAX_DELIVERIES_PAGE: u32 = 200;

/// Longest webhook URL accepted.
const MAX_URL: usize = 2048;

/// The scheme classes a webhook URL may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WebhookScheme {
    Http,
    Https,
}

/// Checks a webhook URL and picks its secret (the given one, or a new one).
pub(crate) fn webhook_config(url: &str, secret: Option<String>) -> Result<(String, String)> {
    // Both schemes are delivered: `https` over rustls, verified against the built-in
    // roots plus the server's `webhook_ca_file`.
    match check_webhook_url(url)? {
        WebhookScheme::Http | WebhookScheme::Https => {}
    }
    let secret = match secret {
        Some(s) if (MIN_SECRET..=MAX_SECRET).contains(&s.len()) => {
            check_text_field("webhook_secret", &s)?;
            s
        }
        Some(_) => return Err(bad("webhook_secret must be 16 to 256 bytes")),
        None => token::mint_webhook_secret(),
    };
    Ok((url.to_owned(), secret))
}

/// Checks a webhook URL's form: `http` or `https`, no credentials, and a host written
/// as a DNS name, a plain dotted-quad IPv4 address or a bracketed IPv6 address. The
/// URL parser reads other spellings (`0x7f000001`, `2130706433`, `127.1`,
/// `0177.0.0.1`, `%31…`, full-width digits) as IPv4 addresses too; they are refused
/// here so that what an admin reads is where the request goes. Where the host points
/// (private, loopback, metadata…) is the worker's check, on the addresses it resolves
/// to when delivering.
fn check_webhook_url(raw: &str) -> Result<WebhookScheme> {
    if raw.len() > MAX_URL {
        return Err(bad(format!("webhook_url is at most {MAX_URL} bytes")));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "webhook_url must not contain whitespace or control characters",
        ));
    }
    // URL parsers read `\` as `/` in http(s) URLs: `http://a\@b/` is not what it seems.
    if raw.contains('\\') {
        return Err(bad("webhook_url must not contain backslashes"));
    }
    let Some((scheme, rest)) = raw.split_once("://") else {
        return Err(bad(
            "webhook_url must be an http(s) URL: http://host[:port]/path",
        ));
    };
    let scheme = if scheme.eq_ignore_ascii_case("http") {
        WebhookScheme::Http
    } else if scheme.eq_ignore_ascii_case("https") {
        WebhookScheme::Https
    } else {
        return Err(bad(
            "webhook_url must be an http(s) URL (scheme http or https)",
        ));
    };
    // The authority as written; the parser would skip extra slashes
    // (`http:///etc/passwd` is `http://etc/passwd` to it).
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("webhook_url needs a host: http://host[:port]/path"));
    }
    if authority.contains('@') {
        return Err(bad(
            "webhook_url must not contain credentials (user:password@); authenticate with the signature",
        ));
    }
    let parsed =
        url::Url::parse(raw).map_err(|e| bad(format!("webhook_url is not a valid URL: {e}")))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "webhook_url must not contain credentials (user:password@)",
        ));
    }
    let written_host = if authority.starts_with('[') {
        authority.split_inclusive(']').next().unwrap_or_default()
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _port)| host)
    };
    match parsed.host() {
        None => Err(bad("webhook_url needs a host: http://host[:port]/path")),
        Some(url::Host::Ipv6(_)) => Ok(scheme),
        Some(url::Host::Ipv4(ip)) if written_host == ip.to_string() => Ok(scheme),
        Some(url::Host::Ipv4(ip)) => Err(bad(format!(
            "webhook_url's host {written_host:?} is not a plain IPv4 address: write it as {ip}"
        ))),
        Some(url::Host::Domain(name)) if !written_host.eq_ignore_ascii_case(name) => Err(bad(
            "webhook_url's host must be a plain DNS name (ASCII, no %-escapes; \
             international names in their xn-- form)",
        )),
        Some(url::Host::Domain(name)) if !is_dns_name(name) => Err(bad(
            "webhook_url's host must be a DNS name (letters, digits, '-', '_' and dots), \
             an IPv4 address (a.b.c.d) or a bracketed IPv6 address",
        )),
        Some(url::Host::Domain(_)) => Ok(scheme),
    }
}

/// Labels of letters, digits, `-` and `_`, 1 to 63 bytes each, 253 at most in all
/// (a final dot allowed).
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The id a webhook receiver deduplicates by: one per message, whatever the scope.
pub fn message_event_id(message: &Message) -> String {
    format!("message.created:{}", message.id)
}

/// `message.created` deliveries of a new message to its webhook `targets` (see
/// [`Chat::webhook_targets`]), due at `due`.
pub(crate) fn message_webhooks(
    message: &Message,
    targets: &[(UserId, String)],
    due: Timestamp,
) -> Vec<NewWebhookDelivery> {
    let event_id = message_event_id(message);
    let scope = channel_scope(message.channel_id);
    event_webhooks("message.created", &event_id, &scope, message, targets, due)
}

/// Deliveries of event `kind` (waking its receivers) with id `event_id` to `targets`.
pub(crate) fn event_webhooks(
    kind: &str,
    event_id: &str,
    scope: &chorus_realtime::Scope,
    data: &impl Serialize,
    targets: &[(UserId, String)],
    due: Timestamp,
) -> Vec<NewWebhookDelivery> {
    if targets.is_empty() {
        return Vec::new();
    }
    let body = WebhookBody {
        id: event_id,
        kind,
        scope: scope.to_string(),
        wake: true,
        data,
    };
    let body = match serde_json::to_string(&body) {
        Ok(body) => body,
        Err(err) => {
            tracing::error!(cause = %err, "webhook body not serialized");
            return Vec::new();
        }
    };
    targets
        .iter()
        .map(|(user, url)| NewWebhookDelivery {
            user_id: *user,
            event_id: event_id.to_owned(),
            url: url.clone(),
            body: body.clone(),
            due_at: due,
        })
        .collect()
}

impl Chat {
    // ---- The decision for one message -------------------------------------------

    /// Decides who `message` wakes in `channel`. For `round_robin`, the caller holds the
    /// channel's turn gate; the turn state is advanced here with a compare-and-set, so
    /// even writers on other nodes never both take the same turn. A storage failure
    /// falls back to empty lists (nobody beyond the mentioned is woken, nobody outside
    /// `on_duty`'s lists receives it) rather than losing the event.
    /// A channel's agent members, through the read cache.
    pub(crate) async fn agent_members(&self, channel: ChannelId) -> Result<Vec<AgentMember>> {
        if let Some(agents) = self.cache.agents(channel) {
            return Ok(agents);
        }
        let epoch = self.cache.epoch();
        let agents = self.store.agent_members(channel).await?;
        self.cache.put_agents(channel, agents.clone(), epoch);
        Ok(agents)
    }

    /// Who a new message by `author` mentioning `mentions` wakes, observes or skips in
    /// `channel` (round-robin: the turn advances). Decided before the message is stored,
    /// so its events are written with their marks in the same transaction.
    pub(crate) async fn delivery_for(
        &self,
        channel: &Channel,
        author: UserId,
        mentions: &[UserId],
    ) -> (Decision, Vec<AgentMember>) {
        match self.try_delivery_for(channel, author, mentions).await {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(channel = %channel.id, cause = %err, "delivery lists unavailable");
                let input = DeliveryInput {
                    policy: channel.policy,
                    author,
                    mentions,
                    on_duty: &[],
                    wake_list: &[],
                    observers: &[],
                    agents: &[],
                    last_woken: None,
                };
                (decide(&input), Vec::new())
            }
        }
    }

    async fn try_delivery_for(
        &self,
        channel: &Channel,
        author: UserId,
        mentions: &[UserId],
    ) -> Result<(Decision, Vec<AgentMember>)> {
        let (mut on_duty, mut wake_list, mut observers) = (Vec::new(), Vec::new(), Vec::new());
        match channel.policy {
            Policy::OnDuty => {
                on_duty = self
                    .store
                    .delivery_list(channel.id, DeliveryList::OnDuty)
                    .await?;
                observers = self.store.observers(channel.workspace_id).await?;
            }
            Policy::Custom => {
                wake_list = self
                    .store
                    .delivery_list(channel.id, DeliveryList::Wake)
                    .await?;
            }
            _ => {}
        }
        // Agents matter for the rotation and for webhooks; a policy that wakes nobody
        // needs neither.
        let agents = if channel.policy == Policy::Broadcast {
            Vec::new()
        } else {
            self.agent_members(channel.id).await?
        };
        let agent_ids: Vec<UserId> = agents.iter().map(|a| a.id).collect();
        let mut input = DeliveryInput {
            policy: channel.policy,
            author,
            mentions,
            on_duty: &on_duty,
            wake_list: &wake_list,
            observers: &observers,
            agents: &agent_ids,
            last_woken: None,
        };
        if channel.policy != Policy::RoundRobin {
            return Ok((decide(&input), agents));
        }
        // Compare-and-set: under the gate the first try wins; a writer elsewhere that
        // moved the turn meanwhile makes us decide again from its state.
        const TRIES: usize = 8;
        let mut decision = None;
        for _ in 0..TRIES {
            input.last_woken = self.store.last_woken(channel.id).await?;
            let decided = decide(&input);
            let settled = match decided.turn {
                None => true,
                Some(turn) => {
                    self.store
                        .advance_turn(channel.id, input.last_woken, turn)
                        .await?
                }
            };
            if settled {
                return Ok((decided, agents));
            }
            decision = Some(decided);
        }
        // Still one agent woken, from the latest state seen; the turn stays where the
        // other writers put it.
        tracing::warn!(channel = %channel.id, "round-robin turn contended; not advanced");
        Ok((decision.unwrap_or_else(|| decide(&input)), agents))
    }

    /// The woken agent members a new message goes to by webhook: those with a webhook
    /// and no live connection (a connected agent gets it on its socket). Decided before
    /// the message is stored, so the deliveries are queued in its transaction
    /// ([`message_webhooks`]).
    pub(crate) async fn webhook_targets(
        &self,
        decision: &Decision,
        agents: &[AgentMember],
    ) -> Vec<(UserId, String)> {
        use chorus_realtime::Mark;
        let woken = agents
            .iter()
            .filter(|a| decision.mark_for(a.id) == Mark::Wake);
        self.unconnected_webhooks(woken).await
    }

    /// Those of `agents` that have a webhook and no live connection, with its URL.
    pub(crate) async fn unconnected_webhooks(
        &self,
        agents: impl Iterator<Item = &AgentMember>,
    ) -> Vec<(UserId, String)> {
        let woken: Vec<(UserId, String)> = agents
            .filter_map(|a| a.webhook_url.clone().map(|url| (a.id, url)))
            .collect();
        if woken.is_empty() {
            return woken;
        }
        let ids: Vec<UserId> = woken.iter().map(|(id, _)| *id).collect();
        let connected = self.presence.connected_among(&ids).await;
        woken
            .into_iter()
            .filter(|(id, _)| !connected.contains(id))
            .collect()
    }

    // ---- Lists ------------------------------------------------------------------

    /// A channel's on-duty or wake list (whoever may read the channel).
    pub async fn delivery_list(
        &self,
        caller: &User,
        ch: ChannelId,
        list: DeliveryList,
    ) -> Result<UserIds> {
        self.readable_channel(caller, ch).await?;
        Ok(UserIds {
            user_ids: self.store.delivery_list(ch, list).await?,
        })
    }

    /// Replaces a channel's on-duty or wake list: the channel's managers (its creator,
    /// workspace owners and admins; never guests); every listed user must be a member
    /// of the channel. Publishes
    /// `channel.on_duty_updated` / `channel.wake_list_updated` on the channel.
    pub async fn set_delivery_list(
        &self,
        caller: &User,
        ch: ChannelId,
        list: DeliveryList,
        req: UserIds,
    ) -> Result<UserIds> {
        let channel = self.readable_channel(caller, ch).await?;
        if channel.kind == ChannelKind::Dm {
            return Err(bad("a DM's delivery is fixed"));
        }
        self.require_channel_manager(caller, &channel).await?;
        let users = distinct(req.user_ids)?;
        for &user in &users {
            if !self.store.is_channel_member(ch, user).await? {
                return Err(not_in_channel(user));
            }
        }
        let kind = match list {
            DeliveryList::OnDuty => "channel.on_duty_updated",
            DeliveryList::Wake => "channel.wake_list_updated",
        };
        let event = Publish::new(
            channel_scope(ch),
            kind,
            &ChannelListChanged {
                channel_id: ch,
                user_ids: users.clone(),
            },
        );
        let logged = self
            .store
            .set_delivery_list(ch, list, &users, events_only(move |()| vec![event.clone()]))
            .await?;
        self.emit_logged(logged).await;
        Ok(UserIds { user_ids: users })
    }

    /// Who observes the workspace's `on_duty` channels (any member may read it).
    pub async fn observers(&self, caller: &User, ws: WorkspaceId) -> Result<UserIds> {
        self.role_in(caller, ws).await?;
        Ok(UserIds {
            user_ids: self.store.observers(ws).await?,
        })
    }

    /// Replaces the workspace's observers (owners and admins); each must be a member.
    /// Publishes `workspace.observers_updated` on the workspace.
    pub async fn set_observers(
        &self,
        caller: &User,
        ws: WorkspaceId,
        req: UserIds,
    ) -> Result<UserIds> {
        if !self.role_in(caller, ws).await?.manages() {
            return Err(forbidden("only owners and admins choose observers"));
        }
        let users = distinct(req.user_ids)?;
        for &user in &users {
            if self.store.member_role(ws, user).await?.is_none() {
                return Err(not_in_workspace(user));
            }
        }
        let event = Publish::new(
            workspace_scope(ws),
            "workspace.observers_updated",
            &ObserversChanged {
                workspace_id: ws,
                user_ids: users.clone(),
            },
        );
        let logged = self
            .store
            .set_observers(ws, &users, events_only(move |()| vec![event.clone()]))
            .await?;
        self.emit_logged(logged).await;
        Ok(UserIds { user_ids: users })
    }

    // ---- Webhook settings and the delivery log ----------------------------------

    /// Sets (or, with no URL, clears) an agent's webhook: server admins or the agent.
    pub async fn set_webhook(
        &self,
        caller: &User,
        user: UserId,
        req: SetWebhook,
    ) -> Result<WebhookSettings> {
        let target = self.webhook_owner(caller, user).await?;
        if target.kind != UserKind::Agent {
            return Err(bad("only agents have webhooks"));
        }
        let Some(url) = req.url else {
            if req.secret.is_some() {
                return Err(bad("secret needs a url"));
            }
            let user = self.store.set_webhook(user, None, None).await?;
            self.cache.changed();
            return Ok(WebhookSettings {
                user,
                webhook_secret: None,
            });
        };
        let (url, secret) = webhook_config(&url, req.secret)?;
        let user = self
            .store
            .set_webhook(user, Some(&url), Some(&secret))
            .await?;
        self.cache.changed();
        Ok(WebhookSettings {
            user,
            webhook_secret: Some(secret),
        })
    }

    /// An agent's webhook deliveries, newest first, with every attempt: server admins
    /// (everything) or the agent itself (without status codes and error texts).
    pub async fn webhook_deliveries(
        &self,
        caller: &User,
        user: UserId,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>> {
        self.webhook_owner(caller, user).await?;
        let limit = match limit {
            0 => 50,
            n => n.min(MAX_DELIVERIES_PAGE),
        };
        let deliveries = self.store.webhook_deliveries(user, limit).await?;
        if caller.is_admin {
            return Ok(deliveries);
        }
        // What a target answered (or how connecting to it failed) would let an agent
        // probe the server's network; the agent sees only how each delivery stands.
        Ok(deliveries.into_iter().map(without_responses).collect())
    }

    async fn webhook_owner(&self, caller: &User, user: UserId) -> Result<User> {
        if caller.id != user && !caller.is_admin {
            return Err(forbidden("only the agent itself or an admin"));
        }
        self.store
            .user(user)
            .await?
            .ok_or_else(|| not_found("no such user"))
    }
}

/// A delivery as its agent sees it: status, attempt count and times, but no status
/// codes or error texts.
fn without_responses(mut delivery: WebhookDelivery) -> WebhookDelivery {
    delivery.last_error = None;
    for attempt in &mut delivery.attempt_log {
        attempt.status_code = None;
        attempt.error = None;
    }
    delivery
}

/// The ids once each, in order; at most [`MAX_LIST`].
fn distinct(ids: Vec<UserId>) -> Result<Vec<UserId>> {
    let set: BTreeSet<UserId> = ids.into_iter().collect();
    if set.len() > MAX_LIST {
        return Err(bad(format!("at most {MAX_LIST} users")));
    }
    Ok(set.into_iter().collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::error::ChatError;

    fn refusal(url: &str) -> Option<String> {
        match check_webhook_url(url) {
            Ok(_) => None,
            Err(ChatError::BadRequest(msg)) => Some(msg),
            Err(other) => panic!("{url}: not a bad request: {other:?}"),
        }
    }

    #[test]
    fn webhook_urls_are_http_with_a_plainly_written_host() {
        for url in [
            "http://example.com/hook",
            "http://Example.COM:8080/hook?x=1#f",
            "http://x/",
            "http://hooks.example.com.:80/a/b",
            "http://my_host.internal-lan/",
            "http://127.0.0.1:9/h",
            "http://203.0.113.7/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
            "http://[2001:db8::1]/",
            "http://xn--bcher-kva.example/",
            "http://example.com/path/with@sign",
        ] {
            assert_eq!(refusal(url), None, "{url}");
        }
        assert_eq!(
            check_webhook_url("https://example.com/").ok(),
            Some(WebhookScheme::Https)
        );
        assert_eq!(
            check_webhook_url("HTTP://example.com/").ok(),
            Some(WebhookScheme::Http)
        );
    }

    #[test]
    fn other_webhook_urls_are_refused_with_the_reason() {
        for (url, reason) in [
            ("ftp://x/", "http(s) URL"),
            ("file:///etc/passwd", "http(s) URL"),
            ("gopher://127.0.0.1:6379/_", "http(s) URL"),
            ("example.com/hook", "http(s) URL"),
            ("http:/example.com", "http(s) URL"),
            ("http://", "needs a host"),
            ("http:///etc/passwd", "needs a host"),
            ("http://?q", "needs a host"),
            ("http://:80/", "not a valid URL"),
            ("http://user:pw@example.com/", "credentials"),
            ("http://user@example.com/", "credentials"),
            ("http://@example.com/", "credentials"),
            ("http://example.com\\@127.0.0.1/", "backslashes"),
            ("http://exa mple.com/", "whitespace"),
            ("http://example.com/\n", "whitespace"),
            (
                "http://0x7f000001/",
                "not a plain IPv4 address: write it as 127.0.0.1",
            ),
            ("http://2130706433:80/", "not a plain IPv4"),
            ("http://127.1/", "not a plain IPv4"),
            ("http://0177.0.0.1/", "not a plain IPv4"),
            ("http://127.000.000.001/", "not a plain IPv4"),
            ("http://127.0.0.1./", "not a plain IPv4"),
            ("http://0x7f.0.0.1/", "not a plain IPv4"),
            ("http://%31%32%37.0.0.1/", "not a plain IPv4"),
            ("http://\u{ff11}\u{ff12}\u{ff17}.0.0.1/", "not a plain IPv4"),
            ("http://1.2.3.4.5/", "not a valid URL"),
            ("http://[::1/", "not a valid URL"),
            ("http://ex%61mple.com/", "plain DNS name"),
            ("http://b\u{fc}cher.example/", "plain DNS name"),
            ("http://a*b.example/", "DNS name"),
        ] {
            let got = refusal(url).unwrap_or_else(|| panic!("{url} was accepted"));
            assert!(got.contains(reason), "{url}: {got:?} lacks {reason:?}");
        }
        let long = format!("http://example.com/{}", "a".repeat(MAX_URL));
        assert!(refusal(&long).is_some_and(|m| m.contains("at most")));
    }

    #[test]
    fn https_and_http_webhook_urls_are_both_accepted() {
        let (url, _) = webhook_config("https://example.com/hook", None).unwrap();
        assert_eq!(url, "https://example.com/hook");
        let (url, secret) = webhook_config("http://example.com/hook", None).unwrap();
        assert_eq!(url, "http://example.com/hook");
        assert!(secret.starts_with("whsec_"));
    }

    #[test]
    fn the_agent_sees_no_status_codes_or_error_texts() {
        let delivery = WebhookDelivery {
            id: 1,
            user_id: UserId(7),
            event_id: "message.created:1".into(),
            url: "http://example.com/".into(),
            status: WebhookStatus::Failed,
            attempts: 1,
            next_attempt_at: None,
            last_error: Some("receiver answered HTTP 503".into()),
            created_at: Timestamp(1),
            finished_at: Some(Timestamp(2)),
            attempt_log: vec![WebhookAttempt {
                attempt: 1,
                at: Timestamp(2),
                status_code: Some(503),
                error: Some("receiver answered HTTP 503".into()),
                duration_ms: 4,
            }],
        };
        let seen = without_responses(delivery.clone());
        assert_eq!(seen.last_error, None);
        assert_eq!(seen.attempt_log[0].status_code, None);
        assert_eq!(seen.attempt_log[0].error, None);
        assert_eq!(seen.attempt_log[0].duration_ms, 4);
        assert_eq!(
            (seen.status, seen.attempts),
            (delivery.status, delivery.attempts)
        );
    }
}
