//! The client covers the HTTP API: every operation of the server's OpenAPI document has
//! a method (`chorus_client::http::ROUTES` names it), and every route that list names is
//! one the server has. A route added to the server without a client method fails here,
//! by name.

use std::collections::BTreeSet;

use chorus_client::http::ROUTES;

#[test]
fn every_route_of_the_openapi_document_has_a_client_method() {
    let doc = serde_json::to_value(chorus_server::openapi()).expect("the document serializes");
    let mut served = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                served.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let mut covered = BTreeSet::new();
    for (method, path, name) in ROUTES {
        assert!(
            covered.insert(((*method).to_owned(), (*path).to_owned())),
            "{method} {path} is listed twice in chorus_client::http::ROUTES ({name})"
        );
    }
    let missing: Vec<String> = served
        .difference(&covered)
        .map(|(method, path)| format!("{method} {path}"))
        .collect();
    let unknown: Vec<String> = covered
        .difference(&served)
        .map(|(method, path)| format!("{method} {path}"))
        .collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "the Rust client and the server's OpenAPI document disagree.\n\
         Routes with no client method (add one to crates/chorus-client/src/http.rs and \
         to ROUTES): {missing:#?}\n\
         Routes in ROUTES the server does not have: {unknown:#?}"
    );
}
