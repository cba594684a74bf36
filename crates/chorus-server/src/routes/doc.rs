//! The OpenAPI document's conventions, applied to every operation the same way the
//! server applies them to every request: what any route can answer besides what its own
//! annotation lists. Each rule mirrors one layer of the server:
//!
//! - `limits::middleware` authenticates a request that carries credentials and rate
//!   limits it: `429` (with `Retry-After`) on every route but `/metrics`.
//! - `auth::Caller` / `auth::Operator`: `401` without a valid bearer token, `403` for a
//!   server key on a user's route (and for a user on an operator's route).
//! - `extract::{Path, Query, Json}`: `400` for a path or query that does not parse, and
//!   for a body that is not JSON of the right shape; `413` for a body over
//!   `max_body_bytes`.
//! - A route with an id in its path answers `404` for an id that names nothing.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi, Ref, RefOr, Type};

/// The security schemes: `bearer`, a user's API token (or JWT, or the admin token, or
/// a server key on the two routes that take one), and `metrics_token`.
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`/metrics` only: the server's `metrics_token`, when it has one \
                         (without one, `/metrics` is open).",
                    ))
                    .build(),
            ),
        );
    }
}

/// Adds the responses every operation can give (see the module's documentation), and
/// fixes up what `utoipa` cannot say from the types alone.
pub struct Conventions;

impl utoipa::Modify for Conventions {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                item.get.as_mut(),
                item.put.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ];
            for op in operations.into_iter().flatten() {
                add_conventional_responses(path, op);
            }
        }
        if let Some(components) = openapi.components.as_mut() {
            // A full record is also a valid profile (a profile's fields are a subset):
            // the answer is one or the other, which `anyOf` says and `oneOf` does not.
            if let Some(RefOr::T(Schema::OneOf(one_of))) = components.schemas.get("UserView") {
                let mut any_of = utoipa::openapi::schema::AnyOf::new();
                any_of.items = one_of.items.clone();
                any_of.description = one_of.description.clone();
                components
                    .schemas
                    .insert("UserView".to_owned(), RefOr::T(Schema::AnyOf(any_of)));
            }
        }
    }
}

fn add_conventional_responses(path: &str, op: &mut Operation) {
    let anonymous = op
        .security
        .as_ref()
        .is_some_and(|reqs| reqs.iter().any(|r| *r == SecurityRequirement::default()));
    let params = op.parameters.as_deref().unwrap_or_default();
    let in_path = params
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Path));
    let in_query = params
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Query));
    let body = op.request_body.is_some();

    let mut add = |status: u16, description: &str| {
        op.responses
            .responses
            .entry(status.to_string())
            .and_modify(|r| {
                if let RefOr::T(r) = r
                    && r.description.is_empty()
                {
                    r.description = description.to_owned();
                }
            })
            .or_insert_with(|| error(description));
    };
    if in_path || in_query || body {
        add(
            400,
            "Bad request: a path or query parameter that does not parse, a body that is not \
             JSON of the request's schema, or values the server refuses (see the message).",
        );
    }
    if !anonymous {
        add(
            401,
            "No bearer token, or one that is invalid, expired or revoked.",
        );
        add(
            403,
            "Not allowed: the caller lacks the permission, or a server key on a route that \
             does not take one.",
        );
    }
    if in_path && !anonymous {
        add(404, "The path names nothing the caller can see.");
    }
    if body {
        add(
            413,
            "The request body is over the server's `max_body_bytes`.",
        );
    }
    if path != "/metrics" {
        add(
            429,
            "Rate limited: too many requests for this user or key, or too many failed \
             authentications from this address. Retry after `Retry-After` seconds.",
        );
    }
    // Every error answer has the error body; describe the headers some carry.
    for (status, response) in op.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        match status.as_str() {
            "401" => {
                response
                    .headers
                    .entry("WWW-Authenticate".to_owned())
                    .or_insert_with(|| {
                        HeaderBuilder::new()
                            .schema(Schema::Object(
                                utoipa::openapi::ObjectBuilder::new()
                                    .schema_type(Type::String)
                                    .build(),
                            ))
                            .description(Some("`Bearer`"))
                            .build()
                    });
            }
            "429" => {
                response
                    .headers
                    .entry("Retry-After".to_owned())
                    .or_insert_with(|| {
                        HeaderBuilder::new()
                            .schema(Schema::Object(
                                utoipa::openapi::ObjectBuilder::new()
                                    .schema_type(Type::Integer)
                                    .minimum(Some(1))
                                    .build(),
                            ))
                            .description(Some("Whole seconds until a retry may succeed."))
                            .build()
                    });
            }
            _ => {}
        }
        if response.description.is_empty() {
            response.description = default_description(status).to_owned();
        }
    }
}

/// An error answer: the SPEC's error body.
fn error(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

fn default_description(status: &str) -> &'static str {
    match status {
        "200" => "OK.",
        "201" => "Created.",
        "202" => "Accepted.",
        "204" => "Done; no body.",
        "400" => "Bad request (see the message).",
        "401" => "No bearer token, or one that is invalid, expired or revoked.",
        "403" => "Not allowed (see the message).",
        "404" => "Not found (see the message).",
        "409" => "Conflicts with the current state (see the message).",
        "410" => "Gone: no longer kept.",
        "413" => "Too large.",
        "503" => "Unavailable.",
        _ => "",
    }
}
