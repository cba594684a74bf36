//! The router: every route of the HTTP API, the WebSocket endpoint and the OpenAPI
//! document generated from the handlers' annotations.

mod channels;
mod commands;
mod doc;
mod keys;
mod mcp;
mod messages;
mod ops;
mod presence;
mod scopes;
mod ui;
mod users;
mod workspaces;
pub mod ws;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use self::doc::BearerAuth;

use crate::limits;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Chorus", description = "Realtime collaboration for humans and AI agents. All routes under /api/v1 take `Authorization: Bearer <token>`."),
    modifiers(&BearerAuth),
    // Event payloads are in no route's answer; listed here so that clients' types are
    // generated from them too.
    components(schemas(chorus_api::Event)),
    security(("bearer" = []))
)]
struct ApiDoc;

/// The OpenAPI document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes_and_doc().1
}

/// The routes and their document, completed with what every route can answer
/// ([`doc::Conventions`]: applied once all routes are in).
fn routes_and_doc() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut api) = api_router().split_for_parts();
    utoipa::Modify::modify(&doc::Conventions, &mut api);
    (router, api)
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(users::router())
        .merge(workspaces::router())
        .merge(channels::router())
        .merge(commands::router())
        .merge(messages::router())
        .merge(presence::router())
        .merge(ops::router())
        .merge(keys::router())
        .merge(scopes::router())
}

/// Builds the whole application.
pub fn app(state: AppState) -> Router {
    let (router, api) = routes_and_doc();
    // Shared, not a `String`: axum clones the router's handlers for every connection,
    // and a captured `String` would put a copy of the whole document on each of them.
    let doc = axum::body::Bytes::from(api.to_json().unwrap_or_else(|_| "{}".to_owned()));
    router
        .route("/ws", get(ws::upgrade))
        .route("/mcp", any(mcp::handle))
        .route(
            "/openapi.json",
            get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    doc,
                )
            }),
        )
        // The web UI: what no route above claims (never `/api/…` or `/ws`).
        .fallback(ui::fallback)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::middleware,
        ))
        .with_state(state)
}
