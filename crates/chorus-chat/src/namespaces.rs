//! Declared namespaces of `topic:` scopes (gateway mode): which topics exist, who may
//! read and publish each, and the JSON Schema its payloads must satisfy. Plain data and
//! matching, compiled once from the configuration; the chat's `authorize_scope` and
//! publish paths apply it (`service/gateway.rs`). Nothing here reads storage.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chorus_api::{Namespace, Role};
use chorus_realtime::{Retention, RetentionRule, Scope};
use serde_json::Value;

/// Most roles one credential (a JWT claim, the connect proxy's answer) may carry.
pub const MAX_CREDENTIAL_ROLES: usize = 32;
/// Longest role name, in bytes.
pub const MAX_ROLE_BYTES: usize = 64;
/// Most events a namespace's `retention_events` may keep per topic.
pub const MAX_RETENTION_EVENTS: u64 = 1_000_000;
/// Longest `retention_secs` of a namespace: a year.
pub const MAX_RETENTION_SECS: u64 = 365 * 24 * 3600;

/// A role name, in `role:<name>` and in a credential's roles: 1 to 64 bytes of
/// `[A-Za-z0-9_.:-]`, compared exactly (case included).
pub fn valid_role_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROLE_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

/// A credential's roles as a JWT claim or the connect proxy gives them: at most
/// [`MAX_CREDENTIAL_ROLES`] valid names (duplicates folded). The error says what is wrong.
pub fn credential_roles(roles: Vec<String>) -> Result<Vec<String>, String> {
    if roles.len() > MAX_CREDENTIAL_ROLES {
        return Err(format!(
            "at most {MAX_CREDENTIAL_ROLES} roles, got {}",
            roles.len()
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(roles.len());
    for role in roles {
        if !valid_role_name(&role) {
            return Err(format!(
                "role {:?} is not 1 to {MAX_ROLE_BYTES} bytes of [A-Za-z0-9_.:-]",
                role.chars().take(80).collect::<String>()
            ));
        }
        if !out.contains(&role) {
            out.push(role);
        }
    }
    Ok(out)
}

/// `role:<name>` access: whom it admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRule {
    /// Admits a connection whose credential carries exactly this role.
    pub name: Arc<str>,
    /// When `name` is a workspace role (`owner`, `admin`, `member`, `guest`): also a
    /// member with that role or a higher one in the workspace `{workspace_id}` names.
    pub workspace: Option<Role>,
}

/// Who may do something in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone, anonymous connections included.
    Public,
    /// Any user.
    Authenticated,
    /// Users whose credential carries the role, or (a workspace role) who have it or a
    /// higher one in the workspace `{workspace_id}` names.
    Role(RoleRule),
    /// The user whose id `{user_id}` names.
    User,
    /// Whom the application's proxy allows, asked each time (answers cached briefly):
    /// `[proxy.subscribe]` for `read`, `[proxy.publish]` for `publish`.
    Proxy,
    /// Nobody from a client: `POST /api/v1/publish` only.
    Server,
}

impl Access {
    fn parse(text: &str, what: &str, server_allowed: bool) -> Result<Self, String> {
        Ok(match text {
            "public" => Self::Public,
            "authenticated" => Self::Authenticated,
            "user" => Self::User,
            "server" if server_allowed => Self::Server,
            "proxy" => Self::Proxy,
            other => match other.strip_prefix("role:") {
                Some(role) if valid_role_name(role) => Self::Role(RoleRule {
                    name: Arc::from(role),
                    workspace: role.parse().ok(),
                }),
                Some(_) => {
                    return Err(format!(
                        "{what} = {other:?}: a role name is 1 to {MAX_ROLE_BYTES} bytes of [A-Za-z0-9_.:-]"
                    ));
                }
                None => {
                    return Err(format!(
                        "{what} = {other:?}: expected public, authenticated, role:<name>, user, proxy{}",
                        if server_allowed { " or server" } else { "" }
                    ));
                }
            },
        })
    }
}

/// Rank of a workspace role, for "this role or a higher one".
pub(crate) const fn rank(role: Role) -> u8 {
    match role {
        Role::Owner => 3,
        Role::Admin => 2,
        Role::Member => 1,
        Role::Guest => 0,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(String),
    /// `*`, last only.
    Rest,
}

/// A compiled scope pattern.
#[derive(Debug, Clone)]
struct Pattern(Vec<Part>);

impl Pattern {
    fn parse(text: &str) -> Result<Self, String> {
        let Some(id) = text.strip_prefix("topic:") else {
            return Err(format!("pattern {text:?} must start with \"topic:\""));
        };
        let mut parts = Vec::new();
        let mut rest = id;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let end = after
                    .find('}')
                    .ok_or_else(|| format!("pattern {text:?}: unclosed {{"))?;
                let name = &after[..end];
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                    return Err(format!("pattern {text:?}: a variable is [a-z_]+"));
                }
                if matches!(parts.last(), Some(Part::Var(_))) {
                    return Err(format!(
                        "pattern {text:?}: two variables need text between them"
                    ));
                }
                parts.push(Part::Var(name.to_owned()));
                rest = &after[end + 1..];
            } else if rest == "*" {
                parts.push(Part::Rest);
                rest = "";
            } else {
                let end = rest.find(['{', '*']).unwrap_or(rest.len());
                if end == 0 {
                    return Err(format!("pattern {text:?}: `*` may only end a pattern"));
                }
                let literal = &rest[..end];
                if !literal
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
                {
                    return Err(format!(
                        "pattern {text:?}: literal text is [A-Za-z0-9_.:-] (a scope id)"
                    ));
                }
                parts.push(Part::Literal(literal.to_owned()));
                rest = &rest[end..];
            }
        }
        if parts.is_empty() {
            return Err(format!("pattern {text:?} names no topic"));
        }
        Ok(Self(parts))
    }

    fn has_var(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|p| matches!(p, Part::Var(v) if v == name))
    }

    /// The variables' values when `id` (a topic's id) matches.
    fn matches(&self, id: &str) -> Option<BTreeMap<String, String>> {
        let mut vars = BTreeMap::new();
        match_parts(&self.0, id, &mut vars).then_some(vars)
    }
}

fn match_parts(parts: &[Part], id: &str, vars: &mut BTreeMap<String, String>) -> bool {
    match parts.split_first() {
        None => id.is_empty(),
        Some((Part::Literal(text), rest)) => id
            .strip_prefix(text.as_str())
            .is_some_and(|after| match_parts(rest, after, vars)),
        Some((Part::Rest, _)) => !id.is_empty(),
        Some((Part::Var(name), rest)) => {
            // One or more characters up to a `.`; the shortest value that lets the rest
            // match wins (patterns are short, so trying each end is cheap).
            let segment = id.find('.').unwrap_or(id.len());
            for end in 1..=segment {
                if match_parts(rest, &id[end..], vars) {
                    vars.insert(name.clone(), id[..end].to_owned());
                    return true;
                }
            }
            false
        }
    }
}

/// One namespace, compiled.
pub struct Compiled {
    pub config: Namespace,
    pattern: Pattern,
    pub read: Access,
    pub publish: Access,
    schema: Option<jsonschema::Validator>,
    /// Whether its events are kept for replay (`retention_* = 0`: no).
    pub history: bool,
    /// Its own window, when it declares `retention_events` or `retention_secs` (not 0):
    /// the count and the age, `None` for the one it leaves to the server's.
    retention: Option<(Option<usize>, Option<Duration>)>,
}

impl Compiled {
    fn new(config: Namespace) -> Result<Self, String> {
        let what = |field: &str| format!("namespace {:?}: {field}", config.name);
        let pattern = Pattern::parse(&config.pattern).map_err(|e| what(&e))?;
        let read = Access::parse(&config.read, "read", false).map_err(|e| what(&e))?;
        let publish = Access::parse(&config.publish, "publish", true).map_err(|e| what(&e))?;
        for access in [&read, &publish] {
            if *access == Access::User && !pattern.has_var("user_id") {
                return Err(what("access \"user\" needs {user_id} in the pattern"));
            }
            if let Access::Role(rule) = access
                && rule.workspace.is_some()
                && !pattern.has_var("workspace_id")
            {
                return Err(what(&format!(
                    "access \"role:{}\" (a workspace role) needs {{workspace_id}} in the pattern; a role from the credential (a JWT claim, the connect proxy) has another name",
                    rule.name
                )));
            }
        }
        let schema = match &config.schema {
            Some(schema) => Some(
                jsonschema::validator_for(schema)
                    .map_err(|e| what(&format!("invalid schema: {e}")))?,
            ),
            None => None,
        };
        let mut history = true;
        for (field, value, most) in [
            (
                "retention_events",
                config.retention_events,
                MAX_RETENTION_EVENTS,
            ),
            ("retention_secs", config.retention_secs, MAX_RETENTION_SECS),
        ] {
            match value {
                Some(0) => history = false,
                Some(n) if n > most => {
                    return Err(what(&format!(
                        "{field} = {n}: at most {most} (0: no history)"
                    )));
                }
                _ => {}
            }
        }
        let retention = match (config.retention_events, config.retention_secs) {
            _ if !history => None,
            (None, None) => None,
            (events, secs) => Some((
                events.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
                secs.map(Duration::from_secs),
            )),
        };
        Ok(Self {
            config,
            pattern,
            read,
            publish,
            schema,
            history,
            retention,
        })
    }

    /// Checks `data` against the namespace's schema; the refusal names the failing path.
    pub fn validate(&self, data: &Value) -> Result<(), String> {
        let Some(schema) = &self.schema else {
            return Ok(());
        };
        match schema.iter_errors(data).next() {
            None => Ok(()),
            Some(err) => {
                let path = err.instance_path().to_string();
                let path = if path.is_empty() { "/" } else { path.as_str() };
                Err(format!(
                    "data does not match the schema of namespace {:?} at {path}: {err}",
                    self.config.name
                ))
            }
        }
    }
}

/// The namespaces a topic is looked up in, in declaration order (the first whose
/// pattern matches holds the topic).
#[derive(Default)]
pub struct Namespaces {
    list: Vec<Compiled>,
}

/// A topic's namespace and its pattern's variables.
pub struct Found<'a> {
    pub namespace: &'a Compiled,
    pub vars: BTreeMap<String, String>,
}

impl Namespaces {
    /// Compiles the configured namespaces; an error names the namespace and the field.
    pub fn new(configs: Vec<Namespace>) -> Result<Self, String> {
        let mut list: Vec<Compiled> = Vec::with_capacity(configs.len());
        for config in configs {
            if list.iter().any(|n| n.config.name == config.name) {
                return Err(format!("namespace {:?} is declared twice", config.name));
            }
            list.push(Compiled::new(config)?);
        }
        Ok(Self { list })
    }

    /// None declared: topics behave as without gateway mode (any user reads any topic,
    /// only the server publishes, nothing is validated).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether anonymous connections have anything to read.
    pub fn any_public(&self) -> bool {
        self.list.iter().any(|n| n.read == Access::Public)
    }

    /// The first namespace whose `read` (`publish`: its `publish`) is `proxy`, if any:
    /// such a namespace needs the matching `[proxy.*]` URL configured.
    pub fn asking_proxy(&self, publish: bool) -> Option<&str> {
        self.list
            .iter()
            .find(|n| *(if publish { &n.publish } else { &n.read }) == Access::Proxy)
            .map(|n| n.config.name.as_str())
    }

    /// The namespace holding `scope` (a `topic:` scope), if any.
    pub fn find(&self, scope: &Scope) -> Option<Found<'_>> {
        if scope.kind() != "topic" {
            return None;
        }
        self.list.iter().find_map(|namespace| {
            namespace
                .pattern
                .matches(scope.id())
                .map(|vars| Found { namespace, vars })
        })
    }

    /// Whether some namespace keeps presence or sends join/leave events.
    pub fn any_watched(&self) -> bool {
        self.list
            .iter()
            .any(|n| n.config.presence || n.config.join_leave)
    }

    /// `(presence, join_leave)` of `scope`'s namespace; `None` when it has neither (or
    /// no namespace).
    pub fn watched(&self, scope: &Scope) -> Option<(bool, bool)> {
        let config = &self.find(scope)?.namespace.config;
        (config.presence || config.join_leave).then_some((config.presence, config.join_leave))
    }

    /// The namespaces as configured.
    pub fn configs(&self) -> Vec<Namespace> {
        self.list.iter().map(|n| n.config.clone()).collect()
    }

    /// The retention window of `scope`'s namespace when it declares its own (what it
    /// leaves unsaid is `server`'s); `None`: the server's applies (no namespace, or one
    /// without `retention_*`). A namespace without history keeps nothing.
    pub fn retention(&self, scope: &Scope, server: Retention) -> Option<Retention> {
        let namespace = self.find(scope)?.namespace;
        if !namespace.history {
            return Some(Retention {
                max_events: 0,
                max_age: Duration::ZERO,
            });
        }
        let (events, age) = namespace.retention?;
        Some(Retention {
            max_events: events.unwrap_or(server.max_events),
            max_age: age.unwrap_or(server.max_age),
        })
    }

    /// The widest window any scope may have: `server`'s, widened by every namespace's
    /// own (what the event log's trim keeps; reads apply each scope's window).
    pub fn widest(&self, server: Retention) -> Retention {
        self.list
            .iter()
            .filter_map(|n| n.retention)
            .fold(server, |widest, (events, age)| Retention {
                max_events: widest.max_events.max(events.unwrap_or(0)),
                max_age: widest.max_age.max(age.unwrap_or(Duration::ZERO)),
            })
    }
}

/// The namespaces' retention windows, as the engine asks for them (installed with the
/// namespaces, replaced on a reload).
pub struct NamespaceRetention {
    pub namespaces: Arc<Namespaces>,
    /// The server-wide window, for what a namespace leaves unsaid.
    pub server: Retention,
}

impl RetentionRule for NamespaceRetention {
    fn retention(&self, scope: &Scope) -> Option<Retention> {
        self.namespaces.retention(scope, self.server)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ns(pattern: &str, read: &str) -> Namespace {
        Namespace {
            name: pattern.to_owned(),
            pattern: pattern.to_owned(),
            read: read.to_owned(),
            publish: "server".to_owned(),
            schema: None,
            retention_events: None,
            retention_secs: None,
            presence: false,
            join_leave: false,
        }
    }

    fn scope(name: &str) -> Scope {
        Scope::parse(name).unwrap()
    }

    #[test]
    fn patterns_match_and_capture() {
        let all = Namespaces::new(vec![
            ns("topic:orders.{order_id}", "authenticated"),
            ns("topic:notifications.user.{user_id}", "user"),
            ns("topic:news", "public"),
            ns("topic:ws.{workspace_id}.alerts", "role:admin"),
        ])
        .unwrap();
        let found = all.find(&scope("topic:orders.42")).unwrap();
        assert_eq!(found.vars["order_id"], "42");
        assert!(all.find(&scope("topic:orders.42.x")).is_none());
        assert!(all.find(&scope("topic:orders.")).is_none());
        let found = all.find(&scope("topic:notifications.user.7")).unwrap();
        assert_eq!(found.vars["user_id"], "7");
        assert!(all.find(&scope("topic:news")).is_some());
        assert!(all.find(&scope("topic:newsy")).is_none());
        assert_eq!(
            all.find(&scope("topic:ws.3.alerts")).unwrap().vars["workspace_id"],
            "3"
        );
        assert!(all.find(&scope("channel:3")).is_none());
        assert!(all.any_public());
    }

    #[test]
    fn a_catch_all_takes_what_the_others_leave() {
        let all = Namespaces::new(vec![
            ns("topic:news", "public"),
            ns("topic:*", "authenticated"),
        ])
        .unwrap();
        assert_eq!(
            all.find(&scope("topic:news")).unwrap().namespace.read,
            Access::Public
        );
        assert_eq!(
            all.find(&scope("topic:a.b.c")).unwrap().namespace.read,
            Access::Authenticated
        );
    }

    #[test]
    fn bad_declarations_are_refused_with_their_reason() {
        let err = |n: Namespace| Namespaces::new(vec![n]).err().unwrap();
        assert!(err(ns("channel:{x}", "public")).contains("topic:"));
        assert!(err(ns("topic:a.{user_id", "public")).contains("unclosed"));
        assert!(err(ns("topic:a.{x}", "user")).contains("{user_id}"));
        assert!(err(ns("topic:a.{x}", "role:admin")).contains("{workspace_id}"));
        assert!(err(ns("topic:a", "role:")).contains("role name"));
        assert!(err(ns("topic:a", "role:two words")).contains("role name"));
        // Not a workspace role: the credential's (a JWT claim, the connect proxy).
        let all = Namespaces::new(vec![ns("topic:a", "role:support")]).unwrap();
        assert_eq!(
            all.find(&scope("topic:a")).unwrap().namespace.read,
            Access::Role(RoleRule {
                name: Arc::from("support"),
                workspace: None
            })
        );
        assert!(err(ns("topic:a", "server")).contains("read"));
        assert!(Namespaces::new(vec![ns("topic:a", "proxy")]).is_ok());
        assert!(err(ns("topic:*.a", "public")).contains("*"));
        let mut retention = ns("topic:a", "public");
        retention.retention_events = Some(MAX_RETENTION_EVENTS + 1);
        assert!(err(retention).contains("retention_events"));
        let mut retention = ns("topic:a", "public");
        retention.retention_secs = Some(MAX_RETENTION_SECS + 1);
        assert!(err(retention).contains("retention_secs"));
        let mut schema = ns("topic:a", "public");
        schema.schema = Some(serde_json::json!({"type": 12}));
        assert!(err(schema).contains("schema"));
    }

    #[test]
    fn a_namespace_retention_overrides_what_it_says() {
        let server = Retention {
            max_events: 1_000,
            max_age: Duration::from_secs(3600),
        };
        let mut few = ns("topic:few.{id}", "public");
        few.retention_events = Some(3);
        let mut long = ns("topic:long", "public");
        long.retention_secs = Some(7200);
        long.retention_events = Some(5_000);
        let mut none = ns("topic:none", "public");
        none.retention_secs = Some(0);
        let all = Namespaces::new(vec![few, long, none, ns("topic:*", "public")]).unwrap();
        let of = |name: &str| all.retention(&scope(name), server);
        assert_eq!(
            of("topic:few.1"),
            Some(Retention {
                max_events: 3,
                max_age: Duration::from_secs(3600)
            })
        );
        assert_eq!(
            of("topic:long"),
            Some(Retention {
                max_events: 5_000,
                max_age: Duration::from_secs(7200)
            })
        );
        assert_eq!(of("topic:none").unwrap().max_events, 0);
        assert_eq!(of("topic:other"), None, "the catch-all says nothing");
        assert_eq!(of("channel:1"), None);
        assert_eq!(
            all.widest(server),
            Retention {
                max_events: 5_000,
                max_age: Duration::from_secs(7200)
            }
        );
    }

    #[test]
    fn credential_roles_are_bounded_and_named() {
        let roles = |r: &[&str]| credential_roles(r.iter().map(|s| (*s).to_owned()).collect());
        assert_eq!(
            roles(&["support", "support", "billing.read"]).unwrap(),
            ["support", "billing.read"]
        );
        assert!(roles(&[]).unwrap().is_empty());
        assert!(roles(&[""]).unwrap_err().contains("1 to 64 bytes"));
        assert!(roles(&["a b"]).unwrap_err().contains("\"a b\""));
        assert!(roles(&[&"x".repeat(65)]).is_err());
        let many: Vec<String> = (0..33).map(|i| format!("r{i}")).collect();
        assert!(credential_roles(many).unwrap_err().contains("at most 32"));
    }

    #[test]
    fn schema_violations_name_the_path() {
        let mut n = ns("topic:orders.{order_id}", "authenticated");
        n.schema = Some(serde_json::json!({
            "type": "object",
            "required": ["amount"],
            "properties": {"amount": {"type": "number"}}
        }));
        let all = Namespaces::new(vec![n]).unwrap();
        let found = all.find(&scope("topic:orders.1")).unwrap();
        assert!(
            found
                .namespace
                .validate(&serde_json::json!({"amount": 3}))
                .is_ok()
        );
        let err = found
            .namespace
            .validate(&serde_json::json!({"amount": "three"}))
            .unwrap_err();
        assert!(err.contains("at /amount"), "{err}");
    }
}
