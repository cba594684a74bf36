//! `/api/v1/scopes/{scope}/events`: the complete catch-up of a scope from the event log.

use axum::extract::State;
use chorus_api::{ScopeEvents, ScopeEventsQuery};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::CallerPrincipal;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(scope_events))
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
