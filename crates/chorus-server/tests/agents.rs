//! Agent-aware delivery (SPEC §4) end to end, with real clients: who is woken, who
//! observes, who never receives a message (live, on resume and on rewind); round-robin
//! turn-taking across a restart; signed, retried, recorded webhooks that never slow the
//! fanout.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use common::{ADMIN_TOKEN, TestServer, TestUser, WAIT, WsClient};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::watch;

/// Creates an agent; with `webhook_url`, returns its webhook secret too.
async fn create_agent(s: &TestServer, name: &str, webhook_url: Option<&str>) -> (TestUser, String) {
    let mut body = json!({ "name": name, "kind": "agent" });
    if let Some(url) = webhook_url {
        body["webhook_url"] = json!(url);
    }
    let resp = s
        .post("/api/v1/users", ADMIN_TOKEN, body)
        .await
        .expect_status(StatusCode::CREATED);
    assert_eq!(resp.body["user"]["kind"], "agent");
    let secret = resp.body["webhook_secret"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(webhook_url.is_some(), !secret.is_empty(), "{}", resp.text);
    let user = TestUser {
        id: resp.body["user"]["id"].as_i64().unwrap(),
        name: name.to_owned(),
        token: resp.body["token"].as_str().unwrap().to_owned(),
    };
    (user, secret)
}

/// Creates a channel with a policy; returns its id.
async fn create_policy_channel(
    s: &TestServer,
    by: &TestUser,
    ws: i64,
    name: &str,
    policy: &str,
    members: &[&TestUser],
) -> i64 {
    let ids: Vec<i64> = members.iter().map(|u| u.id).collect();
    let resp = s
        .post(
            &format!("/api/v1/workspaces/{ws}/channels"),
            &by.token,
            json!({ "name": name, "kind": "public", "policy": policy, "member_ids": ids }),
        )
        .await
        .expect_status(StatusCode::CREATED);
    assert_eq!(resp.body["policy"], policy);
    resp.body["id"].as_i64().unwrap()
}

/// The `message.created` frames among `frames`.
fn created(frames: &[Value]) -> Vec<&Value> {
    frames
        .iter()
        .filter(|f| f["op"] == "event" && f["type"] == "message.created")
        .collect()
}

/// The next `message.created` on the connection, which must be message `id`; returns
/// its `wake` field.
async fn wake_of(client: &mut WsClient, id: i64) -> Value {
    let frame = client.expect_event("message.created").await;
    assert_eq!(frame["data"]["id"], id, "{frame}");
    frame["wake"].clone()
}

async fn connect_all(s: &TestServer, users: &[&TestUser]) -> Vec<WsClient> {
    let mut out = Vec::new();
    for user in users {
        out.push(s.connect(&user.token).await);
    }
    out
}

async fn put(s: &TestServer, path: &str, token: &str, body: Value) -> common::Resp {
    s.call(reqwest::Method::PUT, path, Some(token), Some(body))
        .await
}

/// A channel's delivery lists name its members only: one who leaves the channel, or is
/// removed from it, leaves its on-duty and wake lists with it (as a workspace removal
/// takes them off every list of the workspace). Before: they stayed listed.
#[tokio::test]
async fn leaving_a_channel_leaves_its_delivery_lists() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let (duty, _) = create_agent(&s, "duty-bot", None).await;
    s.add_member(&w.alice, w.ws, &duty, "member").await;
    let ch = create_policy_channel(&s, &w.alice, w.ws, "triage", "on_duty", &[&w.bob, &duty]).await;
    let listed = |list: &'static str| {
        let s = &s;
        let token = w.alice.token.clone();
        async move {
            s.get(&format!("/api/v1/channels/{ch}/{list}"), &token)
                .await
                .expect_status(StatusCode::OK)
                .body["user_ids"]
                .clone()
        }
    };
    for list in ["on-duty", "wake-list"] {
        put(
            &s,
            &format!("/api/v1/channels/{ch}/{list}"),
            &w.alice.token,
            json!({"user_ids": [w.bob.id, duty.id]}),
        )
        .await
        .expect_status(StatusCode::OK);
    }
    s.delete(
        &format!("/api/v1/channels/{ch}/members/{}", duty.id),
        &w.alice.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    s.post(
        &format!("/api/v1/channels/{ch}/leave"),
        &w.bob.token,
        json!({}),
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    for list in ["on-duty", "wake-list"] {
        assert_eq!(listed(list).await, json!([]), "{list}");
    }
    // Added back, they are on no list until a manager puts them there again.
    s.add_channel_member(&w.alice, ch, &duty).await;
    assert_eq!(listed("on-duty").await, json!([]));
}

#[tokio::test]
async fn on_duty_wakes_the_on_duty_and_the_mentioned_observers_observe_others_get_nothing() {
    let s = TestServer::start().await;
    let w = s.world().await; // alice owns; bob and carol are members
    let (duty, _) = create_agent(&s, "duty-bot", None).await;
    let (idle, _) = create_agent(&s, "idle-bot", None).await;
    for agent in [&duty, &idle] {
        s.add_member(&w.alice, w.ws, agent, "member").await;
    }
    let ch = create_policy_channel(
        &s,
        &w.alice,
        w.ws,
        "triage",
        "on_duty",
        &[&w.bob, &w.carol, &duty, &idle],
    )
    .await;
    let scope = format!("channel:{ch}");

    // Lists: validated, authorized, and announced on the channel / workspace.
    let mut watcher = s.connect(&w.bob.token).await;
    put(
        &s,
        &format!("/api/v1/channels/{ch}/on-duty"),
        &w.alice.token,
        json!({"user_ids": [999]}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    // A member of the channel who neither created it nor manages the workspace.
    put(
        &s,
        &format!("/api/v1/channels/{ch}/on-duty"),
        &w.bob.token,
        json!({"user_ids": [duty.id]}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");
    put(
        &s,
        &format!("/api/v1/workspaces/{}/observers", w.ws),
        &w.bob.token,
        json!({"user_ids": [w.carol.id]}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let set = put(
        &s,
        &format!("/api/v1/channels/{ch}/on-duty"),
        &w.alice.token,
        json!({"user_ids": [duty.id, duty.id]}),
    )
    .await
    .expect_status(StatusCode::OK);
    assert_eq!(set.body, json!({"user_ids": [duty.id]}));
    let event = watcher.expect_event("channel.on_duty_updated").await;
    assert_eq!(event["scope"], scope);
    assert_eq!(
        event["data"],
        json!({"channel_id": ch, "user_ids": [duty.id]})
    );
    put(
        &s,
        &format!("/api/v1/workspaces/{}/observers", w.ws),
        &w.alice.token,
        json!({"user_ids": [w.carol.id]}),
    )
    .await
    .expect_status(StatusCode::OK);
    let event = watcher.expect_event("workspace.observers_updated").await;
    assert_eq!(event["data"]["user_ids"], json!([w.carol.id]));
    let read = s
        .get(&format!("/api/v1/channels/{ch}/on-duty"), &w.carol.token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(read.body["user_ids"], json!([duty.id]));
    let read = s
        .get(
            &format!("/api/v1/workspaces/{}/observers", w.ws),
            &w.bob.token,
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(read.body["user_ids"], json!([w.carol.id]));
    watcher.close().await;

    // Bob has one connection that stays, and one that drops before the messages and
    // resumes after them.
    let mut bob = s.connect(&w.bob.token).await;
    let bob_since = bob.hello["offsets"][&scope].as_u64().unwrap();
    let away = s.connect(&w.bob.token).await;
    let away_since = away.hello["offsets"][&scope].as_u64().unwrap();
    away.close().await;
    let mut carol = s.connect(&w.carol.token).await;
    let mut duty_ws = s.connect(&duty.token).await;
    let mut idle_ws = s.connect(&idle.token).await;
    let mut alice = s.connect(&w.alice.token).await;

    // 1. Nobody mentioned: the on-duty agent is woken, the observer observes, the
    //    author sees their own message unwoken, everyone else gets nothing.
    let m1 = s.send(&w.alice, ch, "the build is red").await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(wake_of(&mut duty_ws, m1).await, true);
    assert_eq!(wake_of(&mut carol, m1).await, false);
    assert_eq!(wake_of(&mut alice, m1).await, false);
    // Every recipient's frame was queued before the send returned: a ping's ack
    // follows anything that was coming.
    assert!(
        created(&bob.barrier().await).is_empty(),
        "off-duty bob got it"
    );
    assert!(
        created(&idle_ws.barrier().await).is_empty(),
        "off-duty agent got it"
    );

    // 2. A mention wakes that member too.
    let m2 = s.send(&w.alice, ch, "@bob can you look?").await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(wake_of(&mut bob, m2).await, true);
    assert_eq!(wake_of(&mut duty_ws, m2).await, true);
    assert_eq!(wake_of(&mut carol, m2).await, false);
    assert!(created(&idle_ws.barrier().await).is_empty());

    // 3. Resume: the dropped connection gets exactly what it is entitled to, from the
    //    retained history and from what was held while it reconnected.
    let mut back = s.connect_resuming(&w.bob.token).await;
    let m3 = s.send(&w.alice, ch, "held, not for bob").await["id"]
        .as_i64()
        .unwrap();
    let m4 = s.send(&w.alice, ch, "held, for @bob").await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(wake_of(&mut duty_ws, m3).await, true);
    assert_eq!(wake_of(&mut duty_ws, m4).await, true);
    let reply = back
        .request(json!({"op": "resume", "positions": {scope.clone(): away_since}}))
        .await;
    assert_eq!(reply["scopes"][&scope]["recovered"], true, "{reply}");
    let frames = back.barrier().await;
    let got: Vec<(Value, Value)> = created(&frames)
        .iter()
        .map(|f| (f["data"]["id"].clone(), f["wake"].clone()))
        .collect();
    assert_eq!(
        got,
        [(json!(m2), json!(true)), (json!(m4), json!(true))],
        "resume replays the mentions only"
    );
    assert_eq!(wake_of(&mut bob, m4).await, true);

    // 4. An explicit rewind with `since` is filtered the same way.
    let reply = bob
        .request(json!({"op": "subscribe", "scope": scope, "since": bob_since}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    let frames = bob.barrier().await;
    let ids: Vec<Value> = created(&frames)
        .iter()
        .map(|f| f["data"]["id"].clone())
        .collect();
    assert_eq!(ids, [json!(m2), json!(m4)]);
    s.check_invariants();
}

#[tokio::test]
async fn round_robin_wakes_one_agent_per_message_in_rotation_across_a_restart() {
    let mut s = TestServer::start().await;
    let w = s.world().await;
    let mut agents = Vec::new();
    for name in ["rr-1", "rr-2", "rr-3"] {
        let (agent, _) = create_agent(&s, name, None).await;
        s.add_member(&w.alice, w.ws, &agent, "member").await;
        agents.push(agent);
    }
    let members: Vec<&TestUser> = agents.iter().chain([&w.bob]).collect();
    let ch = create_policy_channel(&s, &w.alice, w.ws, "discuss", "round_robin", &members).await;

    // Which connection (0..3 agents, 3 = bob the human) each message woke.
    async fn woken(clients: &mut [WsClient], id: i64) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, c) in clients.iter_mut().enumerate() {
            match wake_of(c, id).await {
                Value::Bool(true) => out.push(i),
                Value::Bool(false) => {}
                other => panic!("message.created without wake: {other}"),
            }
        }
        out
    }

    let mut clients = connect_all(&s, &members).await;
    let mut order = Vec::new();
    for i in 0..10 {
        let id = s.send(&w.alice, ch, &format!("question {i}")).await["id"]
            .as_i64()
            .unwrap();
        let got = woken(&mut clients, id).await;
        assert_eq!(got.len(), 1, "message {i} woke {got:?}");
        order.extend(got);
    }
    assert_eq!(
        order,
        [0, 1, 2, 0, 1, 2, 0, 1, 2, 0],
        "rotation, humans never woken"
    );

    // Next in rotation is rr-2; a mention of rr-3 overrides it, and the rotation goes
    // on after the agent that was woken.
    let id = s.send(&w.alice, ch, "@rr-3 your call").await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(woken(&mut clients, id).await, [2]);
    let id = s.send(&w.alice, ch, "next").await["id"].as_i64().unwrap();
    assert_eq!(woken(&mut clients, id).await, [0]);
    // An agent's own message never wakes it: rr-2's turn, rr-2 writes, rr-3 is woken.
    let id = s.send(&agents[1], ch, "thinking out loud").await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(woken(&mut clients, id).await, [2]);

    // The turn state survives a restart: rr-1 is next.
    for c in clients {
        c.close().await;
    }
    s.restart().await;
    let mut clients = connect_all(&s, &members).await;
    let mut order = Vec::new();
    for i in 0..4 {
        let id = s.send(&w.bob, ch, &format!("after restart {i}")).await["id"]
            .as_i64()
            .unwrap();
        order.extend(woken(&mut clients, id).await);
    }
    assert_eq!(order, [0, 1, 2, 0]);
}

// ---- Webhooks ---------------------------------------------------------------------

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Hit {
    name: String,
    event_id: String,
    timestamp: String,
    signature: String,
    body: String,
}

/// Per receiver path, the statuses it answers with, in order (then 200).
type Script = Vec<(String, VecDeque<u16>)>;

/// A local webhook receiver. Each path `/hook/{name}` answers with the statuses
/// scripted for it, in order, then 200; `/hook/hang` holds every request until the
/// test releases it.
#[derive(Clone)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<Script>>,
    release: watch::Receiver<bool>,
}

impl Receiver {
    async fn start(script: &[(&str, &[u16])]) -> (SocketAddr, Self, watch::Sender<bool>) {
        let (release_tx, release) = watch::channel(false);
        let receiver = Self {
            hits: Arc::default(),
            script: Arc::new(Mutex::new(
                script
                    .iter()
                    .map(|(n, codes)| ((*n).to_owned(), codes.iter().copied().collect()))
                    .collect(),
            )),
            release,
        };
        let app = axum::Router::new()
            .route("/hook/{name}", axum::routing::post(Self::handle))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, receiver, release_tx)
    }

    async fn handle(
        State(me): State<Self>,
        Path(name): Path<String>,
        headers: HeaderMap,
        body: String,
    ) -> AxumStatus {
        let header = |h: &str| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        me.hits.lock().unwrap().push(Hit {
            name: name.clone(),
            event_id: header("chorus-event-id"),
            timestamp: header("chorus-timestamp"),
            signature: header("chorus-signature"),
            body,
        });
        if name == "hang" {
            let mut release = me.release.clone();
            let _ = release.wait_for(|r| *r).await;
        }
        let code = me
            .script
            .lock()
            .unwrap()
            .iter_mut()
            .find(|(n, _)| *n == name)
            .and_then(|(_, codes)| codes.pop_front())
            .unwrap_or(200);
        AxumStatus::from_u16(code).unwrap()
    }

    fn hits(&self, name: &str) -> Vec<Hit> {
        let hits = self.hits.lock().unwrap();
        hits.iter().filter(|h| h.name == name).cloned().collect()
    }

    /// Waits (bounded by [`WAIT`]) until `name` got `n` requests.
    async fn wait_for(&self, name: &str, n: usize) -> Vec<Hit> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let hits = self.hits(name);
            if hits.len() >= n {
                return hits;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} got {} requests, expected {n}",
                hits.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What a receiver does to trust a request: recompute the HMAC over
/// `"{Chorus-Timestamp}.{raw body}"` and compare in constant time.
fn verify(secret: &str, hit: &Hit) -> bool {
    let Some(hex_sig) = hit.signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{}.{}", hit.timestamp, hit.body).as_bytes());
    mac.verify_slice(&sig).is_ok()
}

/// Polls the delivery log until its newest entry is no longer pending. Read as a server
/// admin: the agent's own view has no status codes or error texts
/// (tests/webhook_targets.rs).
async fn settled_deliveries(s: &TestServer, agent: &TestUser) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let resp = s
            .get(
                &format!("/api/v1/users/{}/webhook-deliveries", agent.id),
                ADMIN_TOKEN,
            )
            .await
            .expect_status(StatusCode::OK);
        let list = resp.body.as_array().unwrap().clone();
        if !list.is_empty() && list.iter().all(|d| d["status"] != "pending") {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still pending: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fast_webhooks(c: &mut chorus_server::Config) {
    c.webhook_backoff_ms = 50;
    c.webhook_backoff_max_ms = 200;
    c.webhook_max_attempts = 3;
    c.webhook_timeout_ms = 5_000;
}

#[tokio::test]
async fn a_webhook_that_fails_twice_is_delivered_once_signed_and_recorded() {
    let (addr, receiver, _release) = Receiver::start(&[("flaky", &[500, 503])]).await;
    let s = TestServer::start_with(fast_webhooks).await;
    let w = s.world().await;
    let url = format!("http://{addr}/hook/flaky");
    let (bot, secret) = create_agent(&s, "hook-bot", Some(&url)).await;
    assert!(secret.starts_with("whsec_"));
    s.add_member(&w.alice, w.ws, &bot, "member").await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&bot])
        .await;

    // The bot holds no connection: woken (policy `all`), it gets a webhook.
    let message = s.send(&w.alice, ch, "anyone around?").await;
    let hits = receiver.wait_for("flaky", 3).await;
    let event_id = format!("message.created:{}", message["id"]);
    for hit in &hits {
        assert_eq!(
            hit.event_id, event_id,
            "every retry carries the same event id"
        );
        assert!(verify(&secret, hit), "bad signature on {hit:?}");
        assert!(!verify("whsec_not-the-secret-at-all", hit));
        let body: Value = serde_json::from_str(&hit.body).unwrap();
        assert_eq!(body["id"], event_id);
        assert_eq!(body["type"], "message.created");
        assert_eq!(body["wake"], true);
        assert_eq!(body["scope"], format!("channel:{ch}"));
        assert_eq!(body["data"], message);
    }
    let log = settled_deliveries(&s, &bot).await;
    assert_eq!(log.len(), 1, "{log:?}");
    let delivery = &log[0];
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["event_id"], event_id);
    assert_eq!(delivery["attempts"], 3);
    let codes: Vec<Value> = delivery["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, [json!(500), json!(503), json!(200)]);
    assert_eq!(delivery["last_error"], "receiver answered HTTP 503");

    // Acknowledged: never sent again. A retried send (same Idempotency-Key) creates
    // and publishes nothing; a new message is a new event, delivered at once.
    let send_keyed = || {
        s.http
            .post(s.url(&format!("/api/v1/channels/{ch}/messages")))
            .bearer_auth(&w.alice.token)
            .header("idempotency-key", "once")
            .json(&json!({"text": "deploy?"}))
            .send()
    };
    let keyed = send_keyed().await.unwrap();
    assert_eq!(keyed.status(), StatusCode::CREATED);
    let after = receiver.wait_for("flaky", 4).await;
    assert_ne!(after[3].event_id, event_id);
    let again = send_keyed().await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    // A send queues its webhooks before it answers, and the worker only ever sends
    // pending rows: two rows, both delivered, are every request there will be.
    let log = settled_deliveries(&s, &bot).await;
    assert_eq!(log.len(), 2, "the replay queued nothing: {log:?}");
    assert!(log.iter().all(|d| d["status"] == "delivered"), "{log:?}");
    assert_eq!(receiver.hits("flaky").len(), 4, "nothing delivered twice");

    // A connected agent is woken live instead.
    let mut live = s.connect(&bot.token).await;
    let m = s.send(&w.alice, ch, "are you there?").await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(wake_of(&mut live, m).await, true);
    // Queued (or not) before the send answered: no row, no request, ever.
    let log = settled_deliveries(&s, &bot).await;
    assert_eq!(log.len(), 2, "no webhook for a connected agent: {log:?}");
    assert_eq!(
        receiver.hits("flaky").len(),
        4,
        "no webhook for a connected agent"
    );

    // The log is the agent's (or an admin's) to read.
    s.get(
        &format!("/api/v1/users/{}/webhook-deliveries", bot.id),
        &w.bob.token,
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.get(
        &format!("/api/v1/users/{}/webhook-deliveries", bot.id),
        ADMIN_TOKEN,
    )
    .await
    .expect_status(StatusCode::OK);
    let metrics = s.get("/metrics", ADMIN_TOKEN).await.text;
    assert!(
        metrics.contains("chorus_webhook_delivered_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("chorus_webhook_failed_attempts_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_failing_webhook_is_retried_up_to_the_limit_and_never_slows_the_fanout() {
    let (addr, receiver, release) =
        Receiver::start(&[("broken", &[500, 500, 500, 500, 500])]).await;
    // Attempts may take long here: the stuck receiver answers only when released.
    let s = TestServer::start_with(|c| {
        fast_webhooks(c);
        c.webhook_timeout_ms = 60_000;
    })
    .await;
    let w = s.world().await;
    let (broken, _) = create_agent(
        &s,
        "broken-bot",
        Some(&format!("http://{addr}/hook/broken")),
    )
    .await;
    let (stuck, _) = create_agent(&s, "stuck-bot", Some(&format!("http://{addr}/hook/hang"))).await;
    for agent in [&broken, &stuck] {
        s.add_member(&w.alice, w.ws, agent, "member").await;
    }
    let ch = create_policy_channel(
        &s,
        &w.alice,
        w.ws,
        "ops",
        "mentions",
        &[&w.bob, &broken, &stuck],
    )
    .await;
    let mut bob = s.connect(&w.bob.token).await;

    let first = s
        .send(&w.alice, ch, "@broken-bot @stuck-bot deploy please")
        .await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(wake_of(&mut bob, first).await, false);
    // The stuck receiver now holds a webhook request open…
    receiver.wait_for("hang", 1).await;
    // …and meanwhile every send returns and reaches bob.
    for i in 0..20 {
        let id = s.send(&w.alice, ch, &format!("status {i}")).await["id"]
            .as_i64()
            .unwrap();
        assert_eq!(wake_of(&mut bob, id).await, false);
    }
    assert_eq!(
        receiver.hits("hang").len(),
        1,
        "still the one request, still held"
    );
    assert!(!*release.borrow());

    // The broken receiver: exactly the limit of attempts, then recorded as failed.
    let log = settled_deliveries(&s, &broken).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status"], "failed");
    assert_eq!(log[0]["attempts"], 3);
    assert_eq!(log[0]["attempt_log"].as_array().unwrap().len(), 3);
    assert_eq!(log[0]["last_error"], "receiver answered HTTP 500");
    assert!(log[0]["finished_at"].is_string());
    // `failed` is final (the worker claims only pending rows), and each attempt's
    // request reached the receiver before its answer was recorded.
    assert_eq!(
        receiver.hits("broken").len(),
        3,
        "no attempt past the limit"
    );

    // Released, the stuck one is delivered.
    release.send(true).unwrap();
    let log = settled_deliveries(&s, &stuck).await;
    assert_eq!(log[0]["status"], "delivered");
    assert_eq!(log[0]["attempts"], 1);
    let stats = s.get("/api/v1/realtime/stats", ADMIN_TOKEN).await.body;
    assert_eq!(stats["webhooks"]["given_up"], 1, "{stats}");
    assert_eq!(
        stats["webhooks"]["attempts"], 4,
        "3 failed + 1 delivered: {stats}"
    );
    assert_eq!(
        receiver.hits("broken").len(),
        3,
        "still no attempt past the limit"
    );
}

#[tokio::test]
async fn webhook_settings_are_validated_and_authorized() {
    let s = TestServer::start().await;
    let w = s.world().await;
    // Humans have no webhook; secrets have a minimum length; URLs must be http(s).
    s.post(
        "/api/v1/users",
        ADMIN_TOKEN,
        json!({"name": "h", "webhook_url": "http://127.0.0.1:1/x"}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    s.post(
        "/api/v1/users",
        ADMIN_TOKEN,
        json!({"name": "a", "kind": "agent", "webhook_url": "ftp://x"}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    s.post(
        "/api/v1/users",
        ADMIN_TOKEN,
        json!({"name": "a", "kind": "agent", "webhook_url": "http://x/", "webhook_secret": "short"}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    // https is delivered over TLS (tests/tls.rs).
    s.post(
        "/api/v1/users",
        ADMIN_TOKEN,
        json!({"name": "tls-a", "kind": "agent", "webhook_url": "https://example.com/hook"}),
    )
    .await
    .expect_status(StatusCode::CREATED);
    let (bot, _) = create_agent(&s, "set-bot", None).await;
    let path = format!("/api/v1/users/{}/webhook", bot.id);
    put(
        &s,
        &path,
        &w.bob.token,
        json!({"url": "http://127.0.0.1:9/h"}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let set = put(
        &s,
        &path,
        &bot.token,
        json!({"url": "http://127.0.0.1:9/h", "secret": "0123456789abcdef"}),
    )
    .await
    .expect_status(StatusCode::OK);
    assert_eq!(set.body["webhook_secret"], "0123456789abcdef");
    assert_eq!(set.body["user"]["webhook_url"], "http://127.0.0.1:9/h");
    let cleared = put(&s, &path, ADMIN_TOKEN, json!({"url": null}))
        .await
        .expect_status(StatusCode::OK);
    assert!(
        cleared.body["user"].get("webhook_url").is_none(),
        "{}",
        cleared.text
    );
    put(
        &s,
        &format!("/api/v1/users/{}/webhook", w.bob.id),
        &w.bob.token,
        json!({"url": "http://x/"}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    // Lists of a DM are fixed; unknown channels are not found.
    let dm = s
        .post(
            &format!("/api/v1/workspaces/{}/dms", w.ws),
            &w.alice.token,
            json!({"user_ids": [w.bob.id]}),
        )
        .await
        .body["id"]
        .as_i64()
        .unwrap();
    put(
        &s,
        &format!("/api/v1/channels/{dm}/wake-list"),
        &w.alice.token,
        json!({"user_ids": [w.bob.id]}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    s.get("/api/v1/channels/9999/wake-list", &w.alice.token)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    put(
        &s,
        "/api/v1/channels/1/wake-list",
        &w.alice.token,
        json!({"user_ids": "x"}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn custom_and_dm_policies_and_a_policy_change_apply_to_the_next_message() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "pick", "public", &[&w.bob, &w.carol])
        .await;
    let mut bob = s.connect(&w.bob.token).await;
    let mut carol = s.connect(&w.carol.token).await;
    // `all`: everyone but the author is woken.
    let m = s.send(&w.alice, ch, "hello all").await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(wake_of(&mut bob, m).await, true);
    assert_eq!(wake_of(&mut carol, m).await, true);
    // `custom` with carol on the wake list.
    s.patch(
        &format!("/api/v1/channels/{ch}"),
        &w.alice.token,
        json!({"policy": "custom"}),
    )
    .await
    .expect_status(StatusCode::OK);
    put(
        &s,
        &format!("/api/v1/channels/{ch}/wake-list"),
        &w.alice.token,
        json!({"user_ids": [w.carol.id]}),
    )
    .await
    .expect_status(StatusCode::OK);
    let updated = bob.expect_event("channel.updated").await;
    assert_eq!(updated["data"]["policy"], "custom");
    bob.expect_event("channel.wake_list_updated").await;
    let m = s.send(&w.alice, ch, "carol's turn").await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(wake_of(&mut bob, m).await, false);
    assert_eq!(wake_of(&mut carol, m).await, true);
    // `broadcast`: nobody, even when mentioned.
    s.patch(
        &format!("/api/v1/channels/{ch}"),
        &w.alice.token,
        json!({"policy": "broadcast"}),
    )
    .await
    .expect_status(StatusCode::OK);
    let m = s.send(&w.alice, ch, "report for @bob").await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(wake_of(&mut bob, m).await, false);
    assert_eq!(wake_of(&mut carol, m).await, false);
    // A DM wakes the other participant, never the author.
    let dm = s
        .post(
            &format!("/api/v1/workspaces/{}/dms", w.ws),
            &w.alice.token,
            json!({"user_ids": [w.bob.id]}),
        )
        .await
        .body["id"]
        .as_i64()
        .unwrap();
    let mut alice = s.connect(&w.alice.token).await;
    let m = s.send(&w.alice, dm, "psst").await["id"].as_i64().unwrap();
    assert_eq!(wake_of(&mut bob, m).await, true);
    assert_eq!(wake_of(&mut alice, m).await, false);
}

#[tokio::test]
async fn the_openapi_document_describes_the_agent_routes() {
    let s = TestServer::start().await;
    let doc = common::documented_routes(
        &s,
        &[
            ("/api/v1/channels/{id}/on-duty", "get"),
            ("/api/v1/channels/{id}/on-duty", "put"),
            ("/api/v1/channels/{id}/wake-list", "get"),
            ("/api/v1/channels/{id}/wake-list", "put"),
            ("/api/v1/workspaces/{id}/observers", "get"),
            ("/api/v1/workspaces/{id}/observers", "put"),
            ("/api/v1/users/{id}/webhook", "put"),
            ("/api/v1/users/{id}/webhook-deliveries", "get"),
        ],
    )
    .await;
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["WebhookDelivery"]["properties"]["attempt_log"].is_object());
    assert!(schemas["UserWithToken"]["properties"]["webhook_secret"].is_object());
}

#[tokio::test]
async fn a_pending_webhook_survives_a_restart() {
    let (addr, receiver, _release) = Receiver::start(&[("later", &[500])]).await;
    // A retry long enough after the first failure that it falls after the restart.
    let mut s = TestServer::start_with(|c| {
        fast_webhooks(c);
        c.webhook_backoff_ms = 3_000;
        c.webhook_backoff_max_ms = 3_000;
    })
    .await;
    let w = s.world().await;
    let (bot, secret) =
        create_agent(&s, "later-bot", Some(&format!("http://{addr}/hook/later"))).await;
    s.add_member(&w.alice, w.ws, &bot, "member").await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&bot])
        .await;
    s.send(&w.alice, ch, "ping").await;
    receiver.wait_for("later", 1).await;
    // The first attempt is recorded; the delivery waits for its retry.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let log = s
            .get(
                &format!("/api/v1/users/{}/webhook-deliveries", bot.id),
                &bot.token,
            )
            .await
            .body;
        if log[0]["attempts"] == 1 {
            assert_eq!(log[0]["status"], "pending");
            assert!(log[0]["next_attempt_at"].is_string());
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.stop().await;
    assert_eq!(
        receiver.hits("later").len(),
        1,
        "the stopped server sends nothing"
    );
    s.restart().await;
    let hits = receiver.wait_for("later", 2).await;
    assert_eq!(hits[0].event_id, hits[1].event_id);
    assert!(verify(&secret, &hits[1]));
    let log = settled_deliveries(&s, &bot).await;
    assert_eq!(log[0]["status"], "delivered");
    assert_eq!(log[0]["attempts"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_to_a_round_robin_channel_share_the_turns_evenly() {
    const SENDS: usize = 30;
    let s = TestServer::start_with(|c| c.http_per_sec = 0).await;
    let w = s.world().await;
    let mut agents = Vec::new();
    for name in ["cc-1", "cc-2", "cc-3"] {
        let (agent, _) = create_agent(&s, name, None).await;
        s.add_member(&w.alice, w.ws, &agent, "member").await;
        agents.push(agent);
    }
    let members: Vec<&TestUser> = agents.iter().chain([&w.bob, &w.carol]).collect();
    let ch = create_policy_channel(&s, &w.alice, w.ws, "work", "round_robin", &members).await;
    let mut clients = connect_all(&s, &agents.iter().collect::<Vec<_>>()).await;

    // Three humans send at once.
    let url = s.url(&format!("/api/v1/channels/{ch}/messages"));
    let mut tasks = Vec::new();
    for (i, sender) in [&w.alice, &w.bob, &w.carol].into_iter().enumerate() {
        let (http, url, token) = (s.http.clone(), url.clone(), sender.token.clone());
        tasks.push(tokio::spawn(async move {
            for k in 0..SENDS / 3 {
                let resp = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({ "text": format!("{i}-{k}") }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::CREATED);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Each message woke exactly one agent, and in message order the woken agents
    // cycle 1, 2, 3: turns follow the order the messages were stored in.
    let mut woken_by_message = std::collections::BTreeMap::new();
    for (i, client) in clients.iter_mut().enumerate() {
        for _ in 0..SENDS {
            let frame = client.expect_event("message.created").await;
            if frame["wake"] == true {
                let id = frame["data"]["id"].as_i64().unwrap();
                assert!(
                    woken_by_message.insert(id, i).is_none(),
                    "message {id} woke two agents"
                );
            }
        }
    }
    assert_eq!(
        woken_by_message.len(),
        SENDS,
        "every message woke one agent"
    );
    let order: Vec<usize> = woken_by_message.into_values().collect();
    let expected: Vec<usize> = (0..SENDS).map(|k| k % 3).collect();
    assert_eq!(order, expected);
}

/// A woken agent is sent a message by webhook only if it could read the channel at the
/// message's place in the order: sends that wake it race its removal from a private
/// channel, and none of the messages logged after its `member.left` there is queued for
/// it — whether it may read is asked in the message's transaction, ordered with the
/// removal's, not before. Rounds bound the attempts to catch the race; several worker
/// threads make it likely (with the check made before the transaction, every run
/// leaked, on SQLite and on PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_removed_while_woken_gets_no_webhook_of_later_messages() {
    const ROUNDS: usize = 3;
    // Senders sending one after the other: sends keep starting while the removal runs.
    const SENDERS: usize = 6;
    const SENDS: usize = 6;
    let s = TestServer::start_with(|c| c.http_per_sec = 0).await;
    let w = s.world().await;
    // Nothing listens there: deliveries are queued and fail, and the queue is all we read.
    let (bot, _) = create_agent(&s, "hook-bot", Some("http://127.0.0.1:9/h")).await;
    s.add_member(&w.alice, w.ws, &bot, "member").await;
    let mut late = Vec::new();
    let mut early = 0;
    for round in 0..ROUNDS {
        let ch = s
            .create_channel(&w.alice, w.ws, &format!("ops-{round}"), "private", &[&bot])
            .await;
        let scope = format!("channel:{ch}");
        let head = s.connect(&w.alice.token).await.hello["offsets"][&scope]
            .as_u64()
            .unwrap();
        // The removal starts once a first send is done, with the others in flight.
        let done = std::sync::atomic::AtomicUsize::new(0);
        let started = tokio::sync::Notify::new();
        let path = format!("/api/v1/channels/{ch}/messages");
        let senders = (0..SENDERS).map(|n| {
            let (s, path, alice, done, started) = (&s, &path, &w.alice, &done, &started);
            async move {
                for i in 0..SENDS {
                    let body = json!({ "text": format!("@hook-bot task {n}.{i}") });
                    s.post(path, &alice.token, body)
                        .await
                        .expect_status(StatusCode::CREATED);
                    if done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        started.notify_one();
                    }
                }
            }
        });
        let removal = async {
            started.notified().await;
            s.delete(
                &format!("/api/v1/channels/{ch}/members/{}", bot.id),
                &w.alice.token,
            )
            .await
            .expect_status(StatusCode::NO_CONTENT);
        };
        tokio::join!(futures_util::future::join_all(senders), removal);

        // The channel's order, as its member alice catches up on it over HTTP.
        let mut left = false;
        for event in s
            .logged_after(&w.alice, &format!("channel:{ch}"), head)
            .await
        {
            match event["type"].as_str().unwrap() {
                "member.left" if event["data"]["user_id"] == bot.id => left = true,
                "message.created" if left => late.push(event["data"]["id"].clone()),
                "message.created" => early += 1,
                _ => {}
            }
        }
        assert!(left, "round {round}: the removal is in the channel's order");
    }

    let queued = s.queued_webhooks(&bot).await;
    assert!(!queued.is_empty(), "the sends before the removals woke it");
    let leaked: Vec<&Value> = late
        .iter()
        .filter(|id| queued.contains(&json!(format!("message.created:{id}"))))
        .collect();
    assert!(
        leaked.is_empty(),
        "{} message(s) after the agent's removal queued for its webhook \
         ({early} before it, {} after): {leaked:?}",
        leaked.len(),
        late.len()
    );
}

/// A receiver that never answers holds at most its share of the webhook worker's slots
/// (a quarter): another agent's deliveries keep going out while every attempt to it
/// hangs. (Before, the oldest due rows were claimed whoever they were for, and the
/// hanging receiver's attempts took every slot in turn.)
#[tokio::test]
async fn a_receiver_that_never_answers_does_not_hold_up_other_agents_webhooks() {
    let (addr, receiver, release) = Receiver::start(&[]).await;
    let s = TestServer::start_with(|c| {
        c.webhook_concurrency = 4;
        c.webhook_timeout_ms = 60_000;
    })
    .await;
    let w = s.world().await;
    let (stuck, _) = create_agent(&s, "stuck-bot", Some(&format!("http://{addr}/hook/hang"))).await;
    let (quick, _) =
        create_agent(&s, "quick-bot", Some(&format!("http://{addr}/hook/quick"))).await;
    for bot in [&stuck, &quick] {
        s.add_member(&w.alice, w.ws, bot, "member").await;
    }
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&stuck, &quick])
        .await;
    // Each message wakes both (policy `all`), and neither holds a connection.
    for n in 0..6 {
        s.send(&w.alice, ch, &format!("anyone? {n}")).await;
    }
    let delivered = receiver.wait_for("quick", 6).await;
    assert_eq!(delivered.len(), 6);
    assert!(
        receiver.hits("hang").len() <= 1,
        "one slot for the hanging receiver"
    );
    release.send(true).unwrap();
}
