//! Operations: health, readiness, metrics, stats, `/api/v1/publish`, and the
//! application's logout (`/api/v1/proxy/sessions/revoke`).

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use chorus_api::{Health, Namespace, Publish as PublishRequest, Published, RevokeProxySessions};
use chorus_chat::service::{NodeStat, check_publish_type};
use chorus_chat::store::KeyPermission;
use chorus_realtime::metrics::MetricsSnapshot;
use chorus_realtime::{Publish, Scope};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{Caller, Operator, bearer};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Json;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Stats {
    #[schema(value_type = Object)]
    pub metrics: MetricsSnapshot,
    pub subscriptions: HashMap<String, u64>,
    /// HTTP requests refused with 429.
    pub http_rate_limited: u64,
    /// Multi-node: every live node and its connections (absent on a single node).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeStat>,
    pub webhooks: WebhookStats,
}

/// Webhook delivery counters since start.
#[derive(Serialize, ToSchema)]
pub struct WebhookStats {
    pub attempts: u64,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub given_up: u64,
    /// Deliveries refused for their target (inside the server's network).
    pub refused: u64,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(stats))
        .routes(routes!(publish))
        .routes(routes!(revoke_proxy_sessions))
        .routes(routes!(namespaces))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".to_owned(),
    })
}

/// How long `/readyz` waits for the database to answer.
const DATABASE_PING: std::time::Duration = std::time::Duration::from_secs(2);

/// Readiness: the broker can publish, the database answers, and the server is not
/// shutting down.

#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> ApiResult<axum::Json<Health>> {
    if state.engine.is_shutting_down() {
        return Err(ApiError::new(
            chorus_proto::ErrorCode::Unavailable,
            "shutting down",
        ));
    }
    if !state.engine.broker.is_ready() {
        return Err(ApiError::new(
            chorus_proto::ErrorCode::Unavailable,
            "broker unavailable",
        ));
    }
    let ping = tokio::time::timeout(DATABASE_PING, state.chat.ping_database()).await;
    if !matches!(ping, Ok(Ok(()))) {
        return Err(ApiError::new(
            chorus_proto::ErrorCode::Unavailable,
            "database unavailable",
        ));
    }
    Ok(axum::Json(Health {
        status: "ready".to_owned(),
    }))
}

/// A Prometheus label value as the text exposition format writes it: `\\`, `"` and
/// newlines escaped, so a value (an event type anyone with a publish key chooses) can
/// never end the line and forge another sample.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Prometheus text format. With `metrics_token` set, only for `Authorization: Bearer
/// <metrics_token>` (the limits middleware leaves that bearer alone: it is no user's).
#[utoipa::path(get, path = "/metrics", tag = "operations", security((), ("metrics_token" = [])), responses((status = 200, body = String, content_type = "text/plain"), (status = 401, body = ErrorBody)))]
async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    if let Some(expected) = state.config.metrics_token.as_deref() {
        // Compared by hash, so timing reveals nothing of the token.
        let given = bearer(&headers).map(chorus_chat::token::hash);
        if given.as_deref() != Some(chorus_chat::token::hash(expected).as_str()) {
            return Err(ApiError::unauthorized("/metrics needs the metrics token"));
        }
    }
    Ok(render_metrics(&state))
}

fn render_metrics(state: &AppState) -> impl IntoResponse + use<> {
    let m = state.engine.metrics.snapshot();
    let mut out = String::with_capacity(2048);
    let mut counter = |name: &str, help: &str, kind: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP chorus_{name} {help}\n# TYPE chorus_{name} {kind}\nchorus_{name} {value}"
        );
    };
    counter(
        "connections",
        "Live WebSocket connections.",
        "gauge",
        m.connections_current,
    );
    counter(
        "connections_total",
        "WebSocket connections accepted.",
        "counter",
        m.connections_total,
    );
    counter(
        "events_published_total",
        "Events published.",
        "counter",
        m.events_published,
    );
    counter(
        "events_delivered_total",
        "Event frames queued to connections.",
        "counter",
        m.events_delivered,
    );
    counter(
        "events_dropped_total",
        "Event frames not queued (full or closed queue).",
        "counter",
        m.events_dropped,
    );
    counter(
        "events_skipped_total",
        "Recipients skipped by agent-aware delivery.",
        "counter",
        m.events_skipped,
    );
    counter(
        "slow_consumer_evictions_total",
        "Connections closed for a full outbound queue.",
        "counter",
        m.slow_consumer_evictions,
    );
    counter(
        "heartbeat_timeouts_total",
        "Connections closed as dead peers.",
        "counter",
        m.heartbeat_timeouts,
    );
    counter(
        "resumes_recovered_total",
        "Subscriptions with since that replayed everything.",
        "counter",
        m.resumes_recovered,
    );
    counter(
        "resumes_unrecovered_total",
        "Subscriptions with since not replayed: outside the retention window, or before the user's access.",
        "counter",
        m.resumes_unrecovered,
    );
    counter(
        "replayed_events_total",
        "Events replayed on subscribe/resume.",
        "counter",
        m.replayed_events,
    );
    counter(
        "subscription_rechecks_total",
        "Connections whose subscriptions were authorized again after an access change.",
        "counter",
        m.rechecks,
    );
    counter(
        "subscriptions_revoked_total",
        "Subscriptions ended by a re-check (subscription.revoked).",
        "counter",
        m.subscriptions_revoked,
    );
    counter(
        "inbound_frames_total",
        "Client frames received.",
        "counter",
        m.inbound_frames,
    );
    counter(
        "inbound_errors_total",
        "Client frames answered with an error.",
        "counter",
        m.inbound_errors,
    );
    counter(
        "rate_limited_total",
        "Client frames over the rate limit.",
        "counter",
        m.rate_limited,
    );
    counter(
        "relay_reads_total",
        "Stream reads by the multi-node relay.",
        "counter",
        m.relay_reads,
    );
    counter(
        "relay_read_events_total",
        "Events read from Redis streams (divide by reads for the batch size).",
        "counter",
        m.relay_read_events,
    );
    counter(
        "relay_errors_total",
        "Redis errors (publish, read, history).",
        "counter",
        m.relay_errors,
    );
    counter(
        "relay_lag_ms",
        "Age of the newest event the relay read, in milliseconds.",
        "gauge",
        m.relay_lag_ms,
    );
    counter(
        "relay_backlog",
        "Events waiting to be published while Redis is unreachable.",
        "gauge",
        m.relay_backlog,
    );
    counter(
        "socket_writes_total",
        "Socket writes, each a flush of one or more frames.",
        "counter",
        m.socket_writes,
    );
    counter(
        "socket_frames_total",
        "Frames written to sockets (per write: how well writes batch).",
        "counter",
        m.socket_frames,
    );
    counter(
        "socket_handovers_total",
        "Writes a writer task left to the connection's own task: the socket was full.",
        "counter",
        m.socket_handovers,
    );
    let http_limited = state
        .http_limiter
        .as_ref()
        .map_or(0, |l| l.rejected.load(std::sync::atomic::Ordering::Relaxed));
    counter(
        "http_rate_limited_total",
        "HTTP requests refused with 429.",
        "counter",
        http_limited,
    );
    let hooks = &state.webhooks;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    counter(
        "webhook_attempts_total",
        "Webhook POSTs made to agents.",
        "counter",
        load(&hooks.attempts),
    );
    counter(
        "webhook_delivered_total",
        "Webhook deliveries acknowledged (2xx).",
        "counter",
        load(&hooks.delivered),
    );
    counter(
        "webhook_failed_attempts_total",
        "Webhook POSTs that failed (each retry counts).",
        "counter",
        load(&hooks.failed_attempts),
    );
    counter(
        "webhook_given_up_total",
        "Webhook deliveries given up after the last attempt.",
        "counter",
        load(&hooks.given_up),
    );
    counter(
        "webhook_refused_total",
        "Webhook deliveries refused for their target (no request made).",
        "counter",
        load(&hooks.refused),
    );
    let _ = writeln!(
        out,
        "# HELP chorus_events_by_type_total Events published per type.\n# TYPE chorus_events_by_type_total counter"
    );
    let mut types: Vec<_> = m.events_by_type.iter().collect();
    types.sort();
    for (kind, n) in types {
        let kind = label(kind);
        let _ = writeln!(out, "chorus_events_by_type_total{{type=\"{kind}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP chorus_subscriptions Live subscriptions per scope kind.\n# TYPE chorus_subscriptions gauge"
    );
    let mut subs: Vec<_> = state
        .engine
        .registry
        .subscriptions_by_kind()
        .into_iter()
        .collect();
    subs.sort();
    for (kind, n) in subs {
        let kind = label(&kind);
        let _ = writeln!(out, "chorus_subscriptions{{kind=\"{kind}\"}} {n}");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// JSON snapshot of the realtime engine's counters: for the admin token or a server key
/// with `stats:read`.
#[utoipa::path(get, path = "/api/v1/realtime/stats", tag = "operations",
    responses((status = 200, body = Stats), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn stats(State(state): State<AppState>, operator: Operator) -> ApiResult<axum::Json<Stats>> {
    operator.require(KeyPermission::StatsRead)?;
    Ok(axum::Json(Stats {
        metrics: state.engine.metrics.snapshot(),
        subscriptions: state.engine.registry.subscriptions_by_kind(),
        http_rate_limited: state
            .http_limiter
            .as_ref()
            .map_or(0, |l| l.rejected.load(std::sync::atomic::Ordering::Relaxed)),
        nodes: state.chat.cluster_nodes().await,
        webhooks: {
            let load =
                |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            let hooks = &state.webhooks;
            WebhookStats {
                attempts: load(&hooks.attempts),
                delivered: load(&hooks.delivered),
                failed_attempts: load(&hooks.failed_attempts),
                given_up: load(&hooks.given_up),
                refused: load(&hooks.refused),
            }
        },
    }))
}

/// Publish an arbitrary event to a scope: Chorus as a realtime gateway for a backend.
/// Its type is the publisher's, outside the server's own families (`message.*`,
/// `channel.*`, `subscription.*`, `typing`, …: `400`).
/// Takes a server key with `publish` (only for scopes under its `publish_prefixes`,
/// when it has any) or the admin token. With namespaces declared, a topic must be in
/// one (`404`) and its `data` valid for the namespace's schema (`400` naming the path);
/// a namespace that keeps no history publishes it ephemeral.
#[utoipa::path(post, path = "/api/v1/publish", tag = "operations", request_body = PublishRequest,
    responses((status = 202, body = Published), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn publish(
    State(state): State<AppState>,
    operator: Operator,
    Json(req): Json<PublishRequest>,
) -> ApiResult<(StatusCode, Json<Published>)> {
    let operator = operator.require(KeyPermission::Publish)?;
    let scope = Scope::parse(&req.scope).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Operator::Key(key) = &operator
        && let Some(prefixes) = &key.publish_prefixes
    {
        let name = scope.to_string();
        if !prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            return Err(ApiError::forbidden(format!(
                "this server key may not publish to {name}"
            )));
        }
    }
    check_publish_type(&req.kind)?;
    // A topic of a declared namespace: inside one, and valid for its schema.
    let kept = state.chat.check_server_publish(&scope, &req.data)?;
    let mut event = Publish::new(scope.clone(), req.kind, &req.data);
    if req.ephemeral || !kept {
        event = event.ephemeral();
    }
    let offset = state
        .engine
        .publish(event)
        .await
        .map_err(|e| ApiError::new(chorus_proto::ErrorCode::Unavailable, e.to_string()))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Published {
            scope: scope.to_string(),
            offset,
        }),
    ))
}

/// The application logged a user out (gateway mode): every socket the connect proxy
/// authenticated for application user `sub` (by cookie or token) closes with 3502 on
/// every node, and their cached identities are forgotten, so the next upgrade with the
/// same cookie asks the application again. Their sockets opened with a Chorus API token
/// stay. Takes a server key with `sessions:revoke` or the admin token; `204` also when
/// nothing was open, `404` without `[proxy.connect]`.
#[utoipa::path(post, path = "/api/v1/proxy/sessions/revoke", tag = "operations", request_body = RevokeProxySessions,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn revoke_proxy_sessions(
    State(state): State<AppState>,
    operator: Operator,
    Json(req): Json<RevokeProxySessions>,
) -> ApiResult<StatusCode> {
    operator.require(KeyPermission::SessionsRevoke)?;
    let proxy = state
        .auth
        .connect_proxy()
        .ok_or_else(|| ApiError::not_found("no [proxy.connect] is configured"))?;
    proxy.revoke(&state.chat, &req.sub).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The declared `topic:` namespaces (gateway mode), as configured: for server admins.
#[utoipa::path(get, path = "/api/v1/namespaces", tag = "operations",
    responses((status = 200, body = Vec<Namespace>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn namespaces(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> ApiResult<axum::Json<Vec<Namespace>>> {
    Ok(axum::Json(state.chat.list_namespaces(&caller)?))
}
