//! `/api/v1/scopes/{scope}/events`: the complete catch-up of a scope from the event log;
//! `/api/v1/scopes/{scope}/presence`: who is subscribed to a topic that keeps presence.

use axum::extract::State;
use chorus_api::{ScopeEvents, ScopeEventsQuery, TopicPresence};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::CallerPrincipal;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(scope_events))
        .routes(routes!(scope_presence))
}

/// Every event of a scope after an offset, as the WebSocket delivers them to the caller
/// (events not for them left out, `wake` as on the socket), one page at a time: call
/// again with `after = next` while `more`. Authorized like a subscription. `410 gone`
/// when some of those events are no longer kept: reload state over the other routes.
/// This is how a client whose `resume` answered `recovered: false` catches up.
#[utoipa::path(get, path = "/api/v1/scopes/{scope}/events", tag = "realtime",
    params(("scope" = String, Path, max_length = 160, pattern = r"^[a-z_]+:[A-Za-z0-9_.:-]+$", description = "e.g. `channel:12` (URL-encoded: `channel%3A12`)"), ScopeEventsQuery),
    responses((status = 200, body = ScopeEvents), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
async fn scope_events(
    State(state): State<AppState>,
    CallerPrincipal(caller): CallerPrincipal,
    Path(scope): Path<String>,
    Query(query): Query<ScopeEventsQuery>,
) -> ApiResult<Json<ScopeEvents>> {
    // The credential's roles count for `role:<name>` namespaces, as on its socket.
    let roles = caller.session.roles.as_deref().unwrap_or_default();
    Ok(Json(
        state
            .chat
            .scope_events(&caller.user, roles, &scope, query)
            .await?,
    ))
}

/// Who is subscribed to a topic whose namespace keeps presence (`presence = true`), on
/// every node: one entry per connection (`session_id` as in its `hello`; anonymous
/// connections as user `0`, `anonymous: true`). Authorized like a subscription; `404`
/// for a scope that is not such a topic.
#[utoipa::path(get, path = "/api/v1/scopes/{scope}/presence", tag = "realtime",
    params(("scope" = String, Path, max_length = 160, pattern = r"^[a-z_]+:[A-Za-z0-9_.:-]+$", description = "e.g. `topic:room.lobby` (URL-encoded: `topic%3Aroom.lobby`)")),
    responses((status = 200, body = TopicPresence), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn scope_presence(
    State(state): State<AppState>,
    CallerPrincipal(caller): CallerPrincipal,
    Path(scope): Path<String>,
) -> ApiResult<Json<TopicPresence>> {
    let roles = caller.session.roles.as_deref().unwrap_or_default();
    Ok(Json(
        state
            .chat
            .topic_presence(&caller.user, roles, &scope)
            .await?,
    ))
}
