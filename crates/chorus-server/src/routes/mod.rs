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
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::uri::Authority;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use self::doc::BearerAuth;

use crate::error::ApiError;
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
    let router = router
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
        ));
    // Only on a dev server: no other request pays for the check.
    let router = if state.config.dev {
        router.layer(axum::middleware::from_fn(dev_addressed_locally))
    } else {
        router
    };
    router.with_state(state)
}

/// On a `--dev` server (which signs anyone in by name alone), only requests addressed
/// to `localhost` or an IP address are answered: a web page that reached the server
/// under a name of its own (DNS rebinding: its name made to resolve to 127.0.0.1)
/// would otherwise be same-origin with it and sign in as anyone. A browser always
/// sends the name it connected to; a request without one is answered.
async fn dev_addressed_locally(req: Request, next: Next) -> Response {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().as_bytes())
        .or_else(|| {
            req.headers()
                .get(axum::http::header::HOST)
                .map(|h| h.as_bytes())
        });
    match authority {
        Some(authority) if !is_local_authority(authority) => ApiError::forbidden(
            "a --dev server answers only requests addressed to localhost or an IP address",
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

/// Whether a request's `Host` (or HTTP/2 authority) names this machine without DNS:
/// `localhost` or an IP address. (Not names under `.localhost`: only some browsers
/// resolve those themselves; elsewhere a hostile resolver could answer for them.)
fn is_local_authority(authority: &[u8]) -> bool {
    let Ok(authority) = Authority::try_from(authority) else {
        return false;
    };
    let host = authority.host();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
}

#[cfg(test)]
mod tests {
    use super::is_local_authority;

    #[test]
    fn local_authorities_are_localhost_and_ip_addresses() {
        for local in [
            "localhost",
            "LOCALHOST:7800",
            "localhost.:7800",
            "127.0.0.1:7800",
            "10.1.2.3",
            "[::1]:7800",
            "[fe80::1]",
        ] {
            assert!(is_local_authority(local.as_bytes()), "{local}");
        }
        for named in [
            "attacker.example",
            "attacker.example:7800",
            "localhost.attacker.example",
            "web.localhost:5173",
            "127.0.0.1.nip.io",
            "",
            "bad host",
        ] {
            assert!(!is_local_authority(named.as_bytes()), "{named}");
        }
    }
}
