//! The web UI: the files of `web/dist`, embedded at build time (`build.rs`), served at
//! `/`. Every route of the API keeps priority: this is only the router's fallback, and
//! it never answers for `/api/…` or `/ws…`. Any other unknown `GET` path gets
//! `index.html`, so the UI's own paths (`/ops`, `/c/42`) survive a reload. Every answer
//! it gives carries the same security headers (`secured`): whichever path returns the
//! page (`/`, `/index.html`, `/ops`), it cannot be framed, sniffed or leak its address.

use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// Vite names bundles by content hash under `assets/`: they can be cached for good.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `index.html` names the current bundles: revalidate it on every load.
const REVALIDATE: &str = "no-cache";
/// Same-origin only; inline styles are set by the UI's components. Never in a frame
/// (`frame-ancestors`, and `X-Frame-Options` for browsers without CSP 2): a framed chat
/// could be clicked through by the page around it.
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   style-src 'self' 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'";

const NOT_BUILT: &str = "<!doctype html><meta charset=utf-8><title>Chorus</title>\
<p>The web UI is not in this build: <code>web/dist</code> was missing. \
Run <code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>, then rebuild Chorus.</p>";

/// The router's fallback: an embedded file, `index.html` for other UI paths, or the
/// API's JSON 404; each with the security headers.
pub async fn fallback(method: Method, uri: Uri) -> Response {
    secured(serve(&method, &uri))
}

/// The headers every answer of the UI carries, set here only: the page is reachable
/// under several paths, so no branch of `serve` may be the one that forgets them.
/// `no-referrer`: links in messages lead off-site, and the UI needs no `Referer` (its
/// sign-in links travel in the fragment, which is never sent anyway).
fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn serve(method: &Method, uri: &Uri) -> Response {
    let path = uri.path();
    if (*method != Method::GET && *method != Method::HEAD) || is_api(path) {
        return ApiError::not_found("no such route").into_response();
    }
    let rel = path.trim_start_matches('/');
    if let Some(body) = asset(rel).filter(|_| !rel.is_empty()) {
        let cache = if rel.starts_with("assets/") {
            IMMUTABLE
        } else {
            "public, max-age=3600"
        };
        return file(content_type(rel), cache, body);
    }
    // A missing bundle is a 404, not the page: a browser would run HTML as a script.
    if rel.starts_with("assets/") || (rel.contains('.') && !rel.ends_with(".html")) {
        return ApiError::not_found("no such file").into_response();
    }
    match asset("index.html") {
        Some(body) => file("text/html; charset=utf-8", REVALIDATE, body),
        None => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            NOT_BUILT,
        )
            .into_response(),
    }
}

fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/") || path == "/ws" || path.starts_with("/ws/")
}

fn asset(rel: &str) -> Option<&'static [u8]> {
    ASSETS
        .binary_search_by(|(name, _)| (*name).cmp(rel))
        .ok()
        .map(|i| ASSETS[i].1)
}

fn file(content_type: &'static str, cache: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_sorted_for_binary_search() {
        assert!(ASSETS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn api_paths_are_never_the_page() {
        for path in ["/api", "/api/v1/nope", "/ws", "/ws/x"] {
            assert!(is_api(path), "{path}");
        }
        for path in ["/", "/ops", "/c/4", "/apix", "/wsx"] {
            assert!(!is_api(path), "{path}");
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            content_type("assets/index-abc.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type("assets/index-abc.css"),
            "text/css; charset=utf-8"
        );
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("x.bin"), "application/octet-stream");
    }
}
