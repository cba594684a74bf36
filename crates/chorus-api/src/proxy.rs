//! The JSON of the proxies to the application (gateway mode; docs/gateway.md): what
//! Chorus POSTs to the `connect`, `subscribe` and `publish` URLs of the TOML file's
//! `[proxy.*]` tables, and the answers it reads back. Not part of the HTTP API (Chorus
//! is the client here), so not in the OpenAPI document.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST [proxy.connect] url`: credentials Chorus does not recognise itself, for the
/// application to introspect. Exactly one of `token` and `cookie` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// The bearer token (or `?token=` of a `/ws` upgrade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The `Cookie` header of a `/ws` upgrade that carried no token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// The request's `Origin` header. A cookie is sent only from one of the connect
    /// proxy's `allowed_origins` (Chorus checks that first); the application may judge
    /// it further.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// The application's answer to a [`ConnectRequest`], in the style of token
/// introspection (RFC 7662): `active` and, when true, who it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectAnswer {
    /// Whether the credentials are valid.
    pub active: bool,
    /// The user's id in the application (required when `active`): the Chorus user is
    /// found, or created on first sight, by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// A display name for a user created on first sight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When the credentials stop being valid (Unix seconds): the socket's expiry, as a
    /// JWT's `exp`. Absent: the socket lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<f64>,
    /// The roles the credentials give the connection (at most 32 names of 1 to 64
    /// bytes of `[A-Za-z0-9_.:-]`), for `role:<name>` namespaces; absent: none. They
    /// belong to these credentials, not to the user: another connection may have others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// Why not (`active: false`), shown to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The user a `subscribe` or `publish` proxy request is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyUser {
    /// The Chorus user id.
    pub id: i64,
    /// The Chorus user name (`app.<sub>` for a user the connect proxy introduced).
    pub name: String,
}

/// `POST [proxy.subscribe] url`: may this user read this scope (a topic of a namespace
/// whose `read` is `proxy`)? Asked on `subscribe`, `resume` and the HTTP catch-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeRequest {
    /// `null`: an anonymous connection.
    pub user: Option<ProxyUser>,
    /// The roles of the credential the connection (or HTTP request) was opened with —
    /// a JWT's roles claim, the connect proxy's `roles` — as for `role:<name>`
    /// namespaces; `[]` when it carries none (and for an anonymous connection).
    #[serde(default)]
    pub roles: Vec<String>,
    pub scope: String,
    pub namespace: String,
}

/// `POST [proxy.publish] url`: may this client publish this event (to a topic of a
/// namespace whose `publish` is `proxy`)?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishRequest {
    /// `null`: an anonymous connection.
    pub user: Option<ProxyUser>,
    /// The roles of the publishing connection's credential, as in [`SubscribeRequest`].
    #[serde(default)]
    pub roles: Vec<String>,
    pub scope: String,
    pub namespace: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Value,
}

/// The application's answer to a [`SubscribeRequest`] or a [`PublishRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyAnswer {
    pub allow: bool,
    /// Why not (`allow: false`), shown to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Publish only: the payload to publish instead of the client's (checked against
    /// the namespace's schema like any other).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}
