//! `/mcp` and the failure limit per client address: the endpoint's agents call this
//! server over its own listener, all from one address (loopback), so their failed
//! authentications must not count against it — or one user's revoked token would lock
//! every other `/mcp` user out.
//!
//! Raw HTTP JSON-RPC on the stateless 2026-07-28 protocol (each request carries its
//! protocol version in `_meta`), with the server's default limits.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, WAIT};
use reqwest::StatusCode;
use serde_json::{Value, json};

const VERSION: &str = "2026-07-28";

/// More listens than the failure burst (20 by default).
const LISTENS: usize = 30;

/// A stateless MCP request of `method` with `params` (its `_meta` added) as `token`.
async fn mcp(
    s: &TestServer,
    token: &str,
    id: u64,
    method: &str,
    mut params: Value,
) -> reqwest::Response {
    let mut req = s
        .http
        .post(s.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", VERSION)
        .header("mcp-method", method)
        .bearer_auth(token);
    if let Some(name) = params["name"].as_str() {
        req = req.header("mcp-name", name);
    }
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
    });
    req.json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
        .send()
        .await
        .unwrap()
}

/// The JSON-RPC messages of an answer: its SSE `data:` lines, or its JSON body.
fn messages(text: &str) -> Vec<Value> {
    let data: Vec<Value> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .collect();
    if data.is_empty() {
        serde_json::from_str(text).into_iter().collect()
    } else {
        data
    }
}

/// Calls `tool` as `token`: the JSON-RPC response.
async fn call_tool(s: &TestServer, token: &str, tool: &str) -> Value {
    let resp = mcp(
        s,
        token,
        1,
        "tools/call",
        json!({"name": tool, "arguments": {}}),
    )
    .await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{tool}: {text}");
    messages(&text)
        .into_iter()
        .find(|m| m["id"] == 1)
        .unwrap_or_else(|| panic!("no response in {text}"))
}

/// Opens a `subscriptions/listen` of the wakes as `token` and reads its stream until the
/// subscription is acknowledged; the stream stays open in the response.
async fn listen(s: &TestServer, token: &str, id: u64) -> reqwest::Response {
    let params = json!({"notifications": {"resourceSubscriptions": ["chorus://wakes"]}});
    let mut resp = mcp(s, token, id, "subscriptions/listen", params).await;
    if resp.status() != StatusCode::OK {
        panic!("{}: {}", resp.status(), resp.text().await.unwrap());
    }
    let mut seen = String::new();
    while !seen.contains("acknowledged") {
        let chunk = tokio::time::timeout(WAIT, resp.chunk())
            .await
            .expect("no acknowledgment in time")
            .unwrap()
            .unwrap_or_else(|| panic!("the listen ended unacknowledged: {seen}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    resp
}

/// One user's token revoked under many listens. Each listen ends with an error that
/// says so, without making its agent again (its connection was refused, 3502: the token
/// would only be refused again), and nothing the agents did counts against the server's
/// own address: another user's tool calls through `/mcp` still work. (Before either
/// fix, each listen tried the dead token once more from that address: thirty failures,
/// over the burst of twenty.)
#[tokio::test]
async fn a_token_revoked_under_many_listens_does_not_lock_others_out_of_mcp() {
    let s = TestServer::start().await;
    let mallory = s.create_user("mallory").await;
    let alice = s.create_user("alice").await;

    let listens = futures_util::future::join_all(
        (0..LISTENS as u64).map(|id| listen(&s, &mallory.token, id)),
    )
    .await;
    // The agent is made (a call waits for it), so the revocation ends its connection.
    let called = call_tool(&s, &mallory.token, "list_channels").await;
    assert_eq!(called["result"]["isError"], false, "{called}");
    s.delete("/api/v1/me/token", &mallory.token)
        .await
        .expect_status(StatusCode::NO_CONTENT);
    for resp in listens {
        let text = tokio::time::timeout(WAIT, resp.text())
            .await
            .expect("a listen outlived its token")
            .unwrap();
        let last = messages(&text).pop().unwrap_or_default();
        let error = last["error"]["message"].as_str().unwrap_or_default();
        assert!(
            error.contains("unauthorized: the token was revoked"),
            "{text}"
        );
    }

    let called = call_tool(&s, &alice.token, "list_channels").await;
    assert_eq!(called["result"]["isError"], false, "{called}");
    s.get("/api/v1/me", &alice.token)
        .await
        .expect_status(StatusCode::OK);
}
