//! The checker's recorded history and its verdict (issue #18 item 6): plain data that a
//! run fills in, and `check`, which lists what in it breaks the delivery guarantees of
//! SPEC §2.3 and §4. No I/O here, so the verdict is tested over hand-written histories.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use serde_json::Value;

/// Microseconds since the run started.
pub type Micros = u64;

/// Texts of edits start with this, so an edit's `message.updated` can be told from the
/// updates a thread root gets when its replies change (the workload never edits roots).
pub const EDIT_PREFIX: &str = "edit:";

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the change happened.
    Acked,
    /// 4xx: the server refused it; it did not happen.
    Refused,
    /// 5xx, or no answer (the node was killed mid-request): it may have happened.
    Unknown,
}

/// A change the workload asked for, and the one event it should cause.
#[derive(Clone, Debug)]
pub struct Change {
    /// For the report: who did what.
    pub what: String,
    /// The scope the event is published on (`channel:{id}`).
    pub scope: String,
    /// The event's identity (`key_of`).
    pub key: String,
    pub start: Micros,
    pub end: Micros,
    pub outcome: Outcome,
    /// Acknowledged, but raced by a change that may legitimately swallow its event (a
    /// reaction removed while its message was being deleted): at most once, then.
    pub may_vanish: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Joined, or added by someone.
    In,
    /// Left, or removed by someone.
    Out,
}

/// A request that changes whether `user` may read `scope`.
#[derive(Clone, Debug)]
pub struct MembershipChange {
    pub user: i64,
    pub scope: String,
    pub direction: Direction,
    pub start: Micros,
    pub end: Micros,
    pub outcome: Outcome,
}

/// How an event reached a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// On the socket (live or replayed by `resume`).
    Socket,
    /// From `GET /api/v1/scopes/{scope}/events` after `recovered: false`.
    CatchUp,
}

/// One event frame a client received, as it came.
#[derive(Clone, Debug)]
pub struct Received {
    pub scope: String,
    pub offset: Option<u64>,
    pub kind: String,
    pub data: Value,
    pub wake: Option<bool>,
    pub at: Micros,
    /// Which of the client's connections (1, 2, …).
    pub conn: u32,
    pub via: Via,
}

/// One scope's answer to a `resume`.
#[derive(Clone, Debug)]
pub struct ResumeResult {
    pub at: Micros,
    pub conn: u32,
    pub scope: String,
    pub position: u64,
    pub recovered: bool,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatchUpResult {
    /// 200: this many events (up to the connection's `hello` offset).
    Events(usize),
    /// 410: no longer retained; the client reloaded the channel.
    Gone,
    /// 404: no such endpoint (yet); treated like 410.
    NotFound,
    /// 403.
    Forbidden,
    /// Anything else, or no answer.
    Failed(String),
}

#[derive(Clone, Debug)]
pub struct CatchUp {
    pub at: Micros,
    pub conn: u32,
    pub scope: String,
    pub after: u64,
    pub result: CatchUpResult,
}

/// Everything one client (one user, one socket at a time) saw.
#[derive(Clone, Debug, Default)]
pub struct ClientLog {
    pub name: String,
    pub user: i64,
    pub events: Vec<Received>,
    pub resumes: Vec<ResumeResult>,
    pub catch_ups: Vec<CatchUp>,
    pub connections: u32,
    /// Final barrier messages this client should have received and did not, in time.
    pub barrier_missed: Vec<String>,
}

/// A whole run.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub seed: u64,
    pub clients: Vec<ClientLog>,
    pub changes: Vec<Change>,
    pub memberships: Vec<MembershipChange>,
    /// Members of each channel scope when the run started.
    pub initial: BTreeMap<String, BTreeSet<i64>>,
    /// Scopes only members may receive (private channels): checked for leaks.
    pub guarded: BTreeSet<String>,
    /// One node, every scope inside its retention window: a `recovered: false` that is
    /// not an authorization refusal is a violation (resume survives restarts).
    pub strict_resume: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub kind: &'static str,
    pub detail: String,
}

/// The identity of an event the workload causes on purpose, or `None` for the others
/// (membership, thread summaries, read cursors, …), which are checked for offsets only.
pub fn key_of(kind: &str, data: &Value) -> Option<String> {
    match kind {
        // Every send has a text of its own: the key holds across an unanswered request
        // (no id known) and shows a retry that created a second message.
        "message.created" => Some(format!("message.created text={}", data["text"].as_str()?)),
        "message.updated" => {
            let text = data["text"].as_str()?;
            text.starts_with(EDIT_PREFIX)
                .then(|| format!("message.updated id={} text={text}", data["id"]))
        }
        "message.deleted" => Some(format!("message.deleted id={}", data["id"])),
        "reaction.added" | "reaction.removed" => Some(format!(
            "{kind} message={} emoji={} user={}",
            data["message_id"],
            data["emoji"].as_str()?,
            data["user_id"]
        )),
        _ => None,
    }
}

impl History {
    fn memberships_of<'a>(
        &'a self,
        user: i64,
        scope: &'a str,
    ) -> impl Iterator<Item = &'a MembershipChange> + 'a {
        self.memberships
            .iter()
            .filter(move |m| m.user == user && m.scope == scope && m.outcome != Outcome::Refused)
    }

    /// `user`'s membership changes of `scope`, for a report.
    fn membership_story(&self, user: i64, scope: &str) -> String {
        let mut story = vec![format!(
            "initially {}",
            if self.initially_in(user, scope) {
                "in"
            } else {
                "out"
            }
        )];
        story.extend(
            self.memberships_of(user, scope)
                .map(|m| format!("{:?} {}–{}µs {:?}", m.direction, m.start, m.end, m.outcome)),
        );
        story.join(", ")
    }

    fn initially_in(&self, user: i64, scope: &str) -> bool {
        self.initial.get(scope).is_some_and(|m| m.contains(&user))
    }

    /// `user` was certainly not a member of `scope` at any time in `[start, end]`: it
    /// was out before `start` (initially, or by an acknowledged leave/removal), and no
    /// join or add that may have taken effect after that began before `end`.
    pub fn surely_out(&self, user: i64, scope: &str, start: Micros, end: Micros) -> bool {
        let may_join_after = |from: Option<Micros>| {
            self.memberships_of(user, scope).any(|m| {
                m.direction == Direction::In
                    && m.start < end
                    && from.is_none_or(|from| m.end > from)
            })
        };
        if !self.initially_in(user, scope) && !may_join_after(None) {
            return true;
        }
        self.memberships_of(user, scope).any(|out| {
            out.direction == Direction::Out
                && out.outcome == Outcome::Acked
                && out.end < start
                && !may_join_after(Some(out.start))
        })
    }

    /// `user` was certainly a member of `scope` from `start` to the end of the run: in
    /// before `start` (initially, or by an acknowledged join/add) and no leave or removal
    /// that may have taken effect after that.
    pub fn surely_in_from(&self, user: i64, scope: &str, start: Micros) -> bool {
        let may_leave_after = |from: Option<Micros>| {
            self.memberships_of(user, scope)
                .any(|m| m.direction == Direction::Out && from.is_none_or(|from| m.end > from))
        };
        if self.initially_in(user, scope) && !may_leave_after(None) {
            return true;
        }
        self.memberships_of(user, scope).any(|join| {
            join.direction == Direction::In
                && join.outcome == Outcome::Acked
                && join.end < start
                && !may_leave_after(Some(join.start))
        })
    }
}

/// Every violation in `h`, in a stable order.
pub fn check(h: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut push = |kind: &'static str, detail: String| out.push(Violation { kind, detail });

    let changes: HashMap<&str, &Change> = h.changes.iter().map(|c| (c.key.as_str(), c)).collect();
    // (scope, offset) → (event, first client that saw it).
    let mut by_offset: HashMap<(&str, u64), (String, &str)> = HashMap::new();

    for client in &h.clients {
        let name = client.name.as_str();
        // Offsets: strictly increasing per scope, across reconnects and catch-ups.
        let mut last: HashMap<&str, u64> = HashMap::new();
        // Keyed events per (scope, key), and wakes per message.
        let mut counts: HashMap<(&str, String), usize> = HashMap::new();
        let mut wakes: HashMap<String, usize> = HashMap::new();
        for e in &client.events {
            if let Some(offset) = e.offset {
                if let Some(&prev) = last.get(e.scope.as_str())
                    && offset <= prev
                {
                    push(
                        "offset order",
                        format!(
                            "{name} got {} offset {offset} after offset {prev} ({} on connection {}, {:?})",
                            e.scope, e.kind, e.conn, e.via
                        ),
                    );
                }
                last.insert(&e.scope, offset);
                let shown = format!("{} {}", e.kind, e.data);
                match by_offset.get(&(e.scope.as_str(), offset)) {
                    Some((seen, who)) if *seen != shown => push(
                        "offset reused",
                        format!(
                            "{} offset {offset}: {who} got {seen}, {name} got {shown}",
                            e.scope
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        by_offset.insert((&e.scope, offset), (shown, name));
                    }
                }
            }
            if e.kind == "message.created" && e.wake == Some(true) {
                *wakes.entry(e.data["id"].to_string()).or_default() += 1;
            }
            let Some(key) = key_of(&e.kind, &e.data) else {
                continue;
            };
            match changes.get(key.as_str()) {
                None => push(
                    "phantom",
                    format!("{name} got {key} on {}, which nobody asked for", e.scope),
                ),
                Some(c) if c.scope == e.scope && h.guarded.contains(&e.scope) => {
                    if h.surely_out(client.user, &e.scope, c.start, c.end) {
                        push(
                            "unentitled",
                            format!(
                                "{name} (user {}) got {key} on {} (offset {:?}, {:?}, connection {}, at {}µs) \
                                 while outside it ({}, {}–{}µs; its membership: {})",
                                client.user,
                                e.scope,
                                e.offset,
                                e.via,
                                e.conn,
                                e.at,
                                c.what,
                                c.start,
                                c.end,
                                h.membership_story(client.user, &e.scope),
                            ),
                        );
                    }
                }
                Some(_) => {}
            }
            *counts.entry((e.scope.as_str(), key)).or_default() += 1;
        }

        // Every change: exactly once where entitled and acknowledged, else at most once.
        for c in &h.changes {
            let n = counts
                .get(&(c.scope.as_str(), c.key.clone()))
                .copied()
                .unwrap_or(0);
            let required = c.outcome == Outcome::Acked
                && !c.may_vanish
                && h.surely_in_from(client.user, &c.scope, c.start);
            if required && n == 0 {
                let unrecovered = client
                    .resumes
                    .iter()
                    .filter(|r| r.scope == c.scope && !r.recovered)
                    .count();
                push(
                    "missing",
                    format!(
                        "{name} never got {} on {} ({}, {}–{}µs; {unrecovered} unrecovered resumes of the scope){}",
                        c.key,
                        c.scope,
                        c.what,
                        c.start,
                        c.end,
                        where_missing(h, client, c)
                    ),
                );
            }
            if n > 1 {
                push(
                    "duplicate",
                    format!(
                        "{name} got {} on {} {n} times ({}, {:?})",
                        c.key, c.scope, c.what, c.outcome
                    ),
                );
            }
        }
        let mut woken: Vec<_> = wakes.into_iter().filter(|(_, n)| *n > 1).collect();
        woken.sort();
        for (id, n) in woken {
            push(
                "woken twice",
                format!("{name} was woken {n} times by message {id}"),
            );
        }

        if h.strict_resume {
            for r in &client.resumes {
                if !r.recovered && r.error.is_none() {
                    push(
                        "resume not recovered",
                        format!(
                            "{name} resume of {} from {} on connection {}: recovered false within the retention window",
                            r.scope, r.position, r.conn
                        ),
                    );
                }
            }
        }
        for b in &client.barrier_missed {
            push(
                "barrier",
                format!("{name} did not receive the final {b} in time"),
            );
        }
    }
    out
}

/// For a missing event: the offset others got it at, and what `client` received on the
/// scope just before and after that offset (and its resumes then), to tell a gap in a
/// live stream from one a resume or a catch-up skipped.
fn where_missing(h: &History, client: &ClientLog, c: &Change) -> String {
    let landed = h.clients.iter().flat_map(|o| &o.events).find(|e| {
        e.scope == c.scope && key_of(&e.kind, &e.data).as_deref() == Some(c.key.as_str())
    });
    let Some(offset) = landed.and_then(|e| e.offset) else {
        return "; nobody got it".to_owned();
    };
    let on_scope = || client.events.iter().filter(|e| e.scope == c.scope);
    let show = |e: Option<&Received>| match e {
        Some(e) => format!(
            "{:?} ({}, connection {}, {:?}, at {}µs)",
            e.offset, e.kind, e.conn, e.via, e.at
        ),
        None => "nothing".to_owned(),
    };
    let before = on_scope().rfind(|e| e.offset.is_some_and(|o| o < offset));
    let after = on_scope().find(|e| e.offset.is_some_and(|o| o > offset));
    let resumes: Vec<String> = client
        .resumes
        .iter()
        .filter(|r| r.scope == c.scope)
        .filter(|r| before.is_none_or(|b| r.at >= b.at) && after.is_none_or(|a| r.at <= a.at))
        .map(|r| {
            format!(
                "from {} on connection {} at {}µs: recovered {}{}",
                r.position,
                r.conn,
                r.at,
                r.recovered,
                r.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )
        })
        .collect();
    let catch_ups: Vec<String> = client
        .catch_ups
        .iter()
        .filter(|u| u.scope == c.scope && u.after < offset)
        .filter(|u| before.is_none_or(|b| u.at >= b.at) && after.is_none_or(|a| u.at <= a.at))
        .map(|u| format!("after {} on connection {}: {:?}", u.after, u.conn, u.result))
        .collect();
    format!(
        "; others got it at offset {offset}; {} got before it {}, after it {}; resumes between: [{}]; catch-ups between: [{}]; connections: {}",
        client.name,
        show(before),
        show(after),
        resumes.join("; "),
        catch_ups.join("; "),
        client.connections
    )
}

/// A compact report: counts per kind, then the first few of each, with the seed.
pub fn report(h: &History, violations: &[Violation], replay: &str) -> String {
    let mut kinds: BTreeMap<&str, Vec<&Violation>> = BTreeMap::new();
    for v in violations {
        kinds.entry(v.kind).or_default().push(v);
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "checker: {} violations, seed {} (replay: {replay})",
        violations.len(),
        h.seed
    );
    for (kind, vs) in &kinds {
        let _ = writeln!(s, "  {kind}: {}", vs.len());
        for v in vs.iter().take(6) {
            let _ = writeln!(s, "    - {}", v.detail);
        }
        if vs.len() > 6 {
            let _ = writeln!(s, "    … and {} more", vs.len() - 6);
        }
    }
    s
}

/// Counts that say what a run exercised.
pub fn summary(h: &History) -> String {
    let count = |o: Outcome| h.changes.iter().filter(|c| c.outcome == o).count();
    let events: usize = h.clients.iter().map(|c| c.events.len()).sum();
    let resumes: Vec<&ResumeResult> = h.clients.iter().flat_map(|c| &c.resumes).collect();
    let unrecovered = resumes.iter().filter(|r| !r.recovered).count();
    let catch_ups: Vec<&CatchUp> = h.clients.iter().flat_map(|c| &c.catch_ups).collect();
    let caught = catch_ups
        .iter()
        .filter(|c| matches!(c.result, CatchUpResult::Events(_)))
        .count();
    let connections: u32 = h.clients.iter().map(|c| c.connections).sum();
    format!(
        "changes: {} acked, {} refused, {} unanswered; membership changes: {}; events received: {events}; \
         connections: {connections}; scope resumes: {} ({unrecovered} not recovered); catch-ups: {} ({caught} answered)",
        count(Outcome::Acked),
        count(Outcome::Refused),
        count(Outcome::Unknown),
        h.memberships.len(),
        resumes.len(),
        catch_ups.len(),
    )
}
