//! Gateway mode end to end (docs/protocol.md, "Namespaces"): declared `topic:`
//! namespaces decide who reads and who publishes, payloads are checked against each
//! namespace's schema on every publish, anonymous connections read public namespaces
//! only, clients publish where allowed, and a namespace without history replays nothing.

#![allow(clippy::unwrap_used)]

mod common;

use chorus_api::Namespace;
use common::{ADMIN_TOKEN, TestServer, WsClient};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn namespace(name: &str, pattern: &str, read: &str, publish: &str) -> Namespace {
    Namespace {
        name: name.into(),
        pattern: pattern.into(),
        read: read.into(),
        publish: publish.into(),
        schema: None,
        retention_events: None,
        retention_secs: None,
        presence: false,
        join_leave: false,
    }
}

/// One namespace of each kind.
fn namespaces() -> Vec<Namespace> {
    let mut room = namespace("rooms", "topic:room.{room}", "public", "public");
    room.schema = Some(json!({
        "type": "object",
        "required": ["text"],
        "properties": {"text": {"type": "string", "maxLength": 100}}
    }));
    let mut orders = namespace(
        "orders",
        "topic:orders.{order_id}",
        "authenticated",
        "server",
    );
    orders.schema = Some(json!({
        "type": "object",
        "required": ["amount"],
        "properties": {"amount": {"type": "number"}}
    }));
    let mut ticker = namespace(
        "ticker",
        "topic:ticker.{symbol}",
        "authenticated",
        "authenticated",
    );
    ticker.retention_events = Some(0);
    vec![
        namespace("news", "topic:news", "public", "server"),
        room,
        orders,
        namespace(
            "inbox",
            "topic:notifications.user.{user_id}",
            "user",
            "user",
        ),
        namespace(
            "ops",
            "topic:ws.{workspace_id}.ops",
            "role:admin",
            "role:admin",
        ),
        ticker,
    ]
}

async fn gateway() -> TestServer {
    TestServer::start_with(|c| c.namespaces = namespaces()).await
}

async fn publish(s: &TestServer, scope: &str, kind: &str, data: Value) -> common::Resp {
    s.post(
        "/api/v1/publish",
        ADMIN_TOKEN,
        json!({"scope": scope, "type": kind, "data": data}),
    )
    .await
}

/// Alice, the world's owner, gives bob `role` in its workspace.
async fn bob_made(s: &TestServer, w: &common::World, role: &str) {
    s.set_role(&w.alice, w.ws, &w.bob, role)
        .await
        .expect_status(StatusCode::OK);
}

/// The answer to a `subscribe`: `ack`, or the error's code.
async fn answer(client: &mut WsClient, scope: &str) -> String {
    let reply = client.subscribe(scope).await;
    if reply["op"] == "ack" {
        "ack".into()
    } else {
        reply["code"].as_str().unwrap().to_owned()
    }
}

async fn client_publish(client: &mut WsClient, scope: &str, data: Value) -> Value {
    client
        .request(json!({"op": "publish", "scope": scope, "type": "said", "data": data}))
        .await
}

#[tokio::test]
async fn anonymous_connections_read_public_namespaces_only() {
    let s = gateway().await;
    let w = s.world().await;
    let mut anon = s.connect_anonymous().await;
    assert_eq!(anon.hello["user_id"], 0);
    assert_eq!(
        anon.hello["scopes"],
        json!([]),
        "no user scope: {}",
        anon.hello
    );

    assert_eq!(answer(&mut anon, "topic:news").await, "ack");
    assert_eq!(answer(&mut anon, "topic:room.lobby").await, "ack");
    assert_eq!(answer(&mut anon, "topic:orders.1").await, "forbidden");
    let inbox = format!("topic:notifications.user.{}", w.alice.id);
    assert_eq!(answer(&mut anon, &inbox).await, "forbidden");
    assert_eq!(
        answer(&mut anon, &format!("topic:ws.{}.ops", w.ws)).await,
        "forbidden"
    );
    assert_eq!(
        answer(&mut anon, &format!("workspace:{}", w.ws)).await,
        "forbidden"
    );
    assert_eq!(answer(&mut anon, "user:0").await, "forbidden");
    assert_eq!(
        answer(&mut anon, &format!("user:{}", w.alice.id)).await,
        "forbidden"
    );
    assert_eq!(answer(&mut anon, "topic:undeclared").await, "not_found");
    let typing = anon.request(json!({"op": "typing", "channel_id": 1})).await;
    assert_eq!(typing["code"], "forbidden", "{typing}");

    // What the server publishes to a public topic reaches it.
    let sent = publish(&s, "topic:news", "headline", json!({"title": "hello"}))
        .await
        .expect_status(StatusCode::ACCEPTED);
    let got = anon.expect_event("headline").await;
    assert_eq!(got["scope"], "topic:news");
    assert_eq!(got["data"], json!({"title": "hello"}));
    assert_eq!(got["offset"], sent.body["offset"]);
    s.check_invariants();
}

#[tokio::test]
async fn without_a_public_namespace_a_token_is_still_required() {
    let s = TestServer::start_with(|c| {
        c.namespaces = vec![namespace(
            "orders",
            "topic:orders.{id}",
            "authenticated",
            "server",
        )]
    })
    .await;
    assert_eq!(s.refused_upgrade(None).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn anonymous_connections_are_capped_per_address() {
    let s = TestServer::start_with(|c| {
        c.namespaces = namespaces();
        c.anonymous_per_address = 2;
    })
    .await;
    let first = s.connect_anonymous().await;
    let _second = s.connect_anonymous().await;
    assert_eq!(s.refused_upgrade(None).await, StatusCode::TOO_MANY_REQUESTS);
    // A closed one gives its place back (once its session has ended).
    first.close().await;
    let mut admitted = false;
    for _ in 0..100 {
        if s.state().anonymous.open("127.0.0.1".parse().unwrap()) < 2 {
            admitted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(admitted, "the closed connection's place was not given back");
    let mut again = s.connect_anonymous().await;
    assert_eq!(answer(&mut again, "topic:news").await, "ack");
}

#[tokio::test]
async fn each_access_kind_lets_in_exactly_whom_it_names() {
    let s = gateway().await;
    // alice owns the workspace, bob is an admin of it, carol a member; dave is in none.
    let w = s.world().await;
    bob_made(&s, &w, "admin").await;
    let dave = s.create_user("dave").await;
    let ops = format!("topic:ws.{}.ops", w.ws);
    let inbox = |id: i64| format!("topic:notifications.user.{id}");
    let cases: Vec<(&common::TestUser, Vec<(String, &str)>)> = vec![
        (
            &w.alice,
            vec![
                ("topic:news".into(), "ack"),
                ("topic:orders.7".into(), "ack"),
                (inbox(w.alice.id), "ack"),
                (inbox(w.bob.id), "forbidden"),
                (ops.clone(), "ack"),
                ("topic:nowhere".into(), "not_found"),
            ],
        ),
        (&w.bob, vec![(ops.clone(), "ack"), (inbox(w.bob.id), "ack")]),
        (
            &w.carol,
            vec![(ops.clone(), "forbidden"), ("topic:orders.7".into(), "ack")],
        ),
        (
            &dave,
            vec![
                (ops.clone(), "forbidden"),
                (format!("topic:ws.{}.ops", w.ws + 1000), "forbidden"),
                (inbox(dave.id), "ack"),
            ],
        ),
    ];
    let mut wrong = Vec::new();
    for (user, rows) in cases {
        let mut client = s.connect(&user.token).await;
        for (scope, expected) in rows {
            let got = answer(&mut client, &scope).await;
            if got != expected {
                wrong.push(format!(
                    "{} subscribing {scope}: expected {expected}, got {got}",
                    user.name
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// A role is checked for the life of the subscription, by the engine's one re-check:
/// demoted from admin, bob loses the admins' topic and gets nothing published after.
#[tokio::test]
async fn a_demotion_revokes_a_role_namespace_live() {
    let s = gateway().await;
    let w = s.world().await;
    bob_made(&s, &w, "admin").await;
    let ops = format!("topic:ws.{}.ops", w.ws);
    let mut bob = s.connect(&w.bob.token).await;
    assert_eq!(answer(&mut bob, &ops).await, "ack");
    assert_eq!(answer(&mut bob, "topic:news").await, "ack");

    bob_made(&s, &w, "member").await;
    let revoked = bob.expect_event("subscription.revoked").await;
    assert_eq!(revoked["scope"], ops);
    assert_eq!(revoked["data"]["reason"], "role_changed");
    // Published after the revocation: the ops event must not arrive before the marker.
    publish(&s, &ops, "alert", json!({}))
        .await
        .expect_status(StatusCode::ACCEPTED);
    publish(&s, "topic:news", "marker", json!({}))
        .await
        .expect_status(StatusCode::ACCEPTED);
    loop {
        let frame = bob.recv_json().await;
        assert_ne!(
            frame["type"], "alert",
            "delivered after the revocation: {frame}"
        );
        if frame["type"] == "marker" {
            assert_eq!(frame["scope"], "topic:news");
            break;
        }
    }
    assert_eq!(answer(&mut bob, &ops).await, "forbidden");
    s.check_invariants();
}

#[tokio::test]
async fn schema_violations_are_refused_naming_the_path() {
    let s = gateway().await;
    let w = s.world().await;
    // Server publish.
    let refused = publish(&s, "topic:orders.1", "order.paid", json!({"amount": "ten"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("at /amount"), "{message}");
    let refused = publish(&s, "topic:orders.1", "order.paid", json!({}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("amount"),
        "{}",
        refused.text
    );
    publish(&s, "topic:orders.1", "order.paid", json!({"amount": 10}))
        .await
        .expect_status(StatusCode::ACCEPTED);

    // Client publish.
    let mut alice = s.connect(&w.alice.token).await;
    let reply = client_publish(&mut alice, "topic:room.lobby", json!({"text": 5})).await;
    assert_eq!(reply["op"], "error", "{reply}");
    assert_eq!(reply["code"], "bad_request");
    assert!(
        reply["message"].as_str().unwrap().contains("at /text"),
        "{reply}"
    );
    let long = "x".repeat(101);
    let reply = client_publish(&mut alice, "topic:room.lobby", json!({"text": long})).await;
    assert_eq!(reply["code"], "bad_request", "{reply}");
}

#[tokio::test]
async fn a_client_publish_is_acked_with_its_offset_and_delivered() {
    let s = gateway().await;
    let w = s.world().await;
    let mut alice = s.connect(&w.alice.token).await;
    assert_eq!(answer(&mut alice, "topic:room.lobby").await, "ack");
    let mut anon = s.connect_anonymous().await;

    let ack = client_publish(&mut anon, "topic:room.lobby", json!({"text": "hi"})).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    let offset = ack["offset"].as_u64().expect("an offset");
    let got = alice.expect_event("said").await;
    assert_eq!(got["scope"], "topic:room.lobby");
    assert_eq!(got["offset"], offset);
    assert_eq!(got["data"], json!({"text": "hi"}));

    // Where the namespace does not let the caller publish.
    let refused = client_publish(&mut anon, "topic:news", json!({})).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let refused = client_publish(&mut alice, "topic:news", json!({})).await;
    assert_eq!(refused["code"], "forbidden", "server only: {refused}");
    let refused = client_publish(&mut anon, "topic:ticker.abc", json!({})).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let inbox = format!("topic:notifications.user.{}", w.bob.id);
    let refused = client_publish(&mut alice, &inbox, json!({})).await;
    assert_eq!(refused["code"], "forbidden", "another's inbox: {refused}");
    let own = format!("topic:notifications.user.{}", w.alice.id);
    let ack = client_publish(&mut alice, &own, json!({})).await;
    assert_eq!(ack["op"], "ack", "own inbox: {ack}");
    let refused = client_publish(&mut alice, &format!("channel:{}", 1), json!({})).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let refused = client_publish(&mut alice, "topic:nowhere", json!({})).await;
    assert_eq!(refused["code"], "not_found", "{refused}");
    let refused = alice
        .request(
            json!({"op": "publish", "scope": "topic:room.a", "type": "", "data": {"text": "x"}}),
        )
        .await;
    assert_eq!(refused["code"], "bad_request", "{refused}");
    // The publisher's own subscription hears its event too.
    let mut bob = s.connect(&w.bob.token).await;
    assert_eq!(answer(&mut bob, "topic:room.lobby").await, "ack");
    let ack = client_publish(&mut bob, "topic:room.lobby", json!({"text": "yo"})).await;
    let got = bob.expect_event("said").await;
    assert_eq!(got["offset"], ack["offset"]);
}

/// A `subscription.revoked` (or `channel.left`, `message.created`, …) that a client or
/// a backend could publish would make every subscriber's SDK act on it as if the server
/// had said it: the server's types are the server's.
#[tokio::test]
async fn nobody_publishes_an_event_of_a_type_the_server_sends() {
    let s = gateway().await;
    let w = s.world().await;
    let mut alice = s.connect(&w.alice.token).await;
    assert_eq!(answer(&mut alice, "topic:room.lobby").await, "ack");
    let mut anon = s.connect_anonymous().await;
    let data = json!({"scope": "topic:room.lobby", "reason": "namespaces_changed", "text": "x"});
    for kind in [
        "subscription.revoked",
        "channel.left",
        "Message.created",
        "typing",
        "subscriber.joined",
        "credentials.revoked",
    ] {
        let refused = anon
            .request(
                json!({"op": "publish", "scope": "topic:room.lobby", "type": kind, "data": data}),
            )
            .await;
        assert_eq!(refused["code"], "bad_request", "{kind}: {refused}");
        publish(&s, "topic:room.lobby", kind, data.clone())
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    // An application's own dotted types are its own: the first event alice hears.
    let ack = anon
        .request(json!({"op": "publish", "scope": "topic:room.lobby", "type": "room.said", "data": data}))
        .await;
    assert_eq!(ack["op"], "ack", "{ack}");
    let first = alice.recv_json().await;
    assert_eq!(first["type"], "room.said", "{first}");
}

#[tokio::test]
async fn client_publishes_are_rate_limited() {
    let s = TestServer::start_with(|c| {
        c.namespaces = namespaces();
        c.client_publish_per_sec = 1;
    })
    .await;
    let w = s.world().await;
    let mut alice = s.connect(&w.alice.token).await;
    let first = client_publish(&mut alice, "topic:room.a", json!({"text": "1"})).await;
    assert_eq!(first["op"], "ack", "{first}");
    let second = client_publish(&mut alice, "topic:room.a", json!({"text": "2"})).await;
    assert_eq!(second["code"], "rate_limited", "{second}");
}

#[tokio::test]
async fn topics_outside_every_namespace_are_refused_unless_a_catch_all_takes_them() {
    let s = gateway().await;
    let w = s.world().await;
    let mut alice = s.connect(&w.alice.token).await;
    assert_eq!(answer(&mut alice, "topic:elsewhere").await, "not_found");
    publish(&s, "topic:elsewhere", "x", json!({}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    // The HTTP catch-up is authorized by the same rule.
    s.get(
        "/api/v1/scopes/topic%3Aelsewhere/events?after=0",
        &w.alice.token,
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");

    let mut all = namespaces();
    all.push(namespace("rest", "topic:*", "authenticated", "server"));
    let s = TestServer::start_with(|c| c.namespaces = all).await;
    let w = s.world().await;
    let mut alice = s.connect(&w.alice.token).await;
    assert_eq!(answer(&mut alice, "topic:elsewhere.deep.down").await, "ack");
    assert_eq!(
        answer(&mut alice, "topic:orders.1").await,
        "ack",
        "the first match holds it"
    );
}

#[tokio::test]
async fn a_namespace_without_history_replays_nothing() {
    let s = gateway().await;
    let w = s.world().await;
    let mut alice = s.connect(&w.alice.token).await;
    let mut heads = Vec::new();
    for scope in ["topic:ticker.abc", "topic:orders.9"] {
        let ack = alice.subscribe(scope).await;
        assert_eq!(ack["op"], "ack", "{ack}");
        heads.push(ack["offset"].as_u64().unwrap_or(0));
    }
    let kept = publish(&s, "topic:ticker.abc", "tick", json!({"p": 1}))
        .await
        .expect_status(StatusCode::ACCEPTED);
    assert_eq!(kept.body["offset"], Value::Null, "no offset: {}", kept.text);
    let live = alice.expect_event("tick").await;
    assert!(live.get("offset").is_none(), "{live}");
    publish(&s, "topic:orders.9", "order.paid", json!({"amount": 1}))
        .await
        .expect_status(StatusCode::ACCEPTED);
    alice.expect_event("order.paid").await;

    // Resuming both from before: the order comes back, the tick does not.
    let mut later = s.connect(&w.alice.token).await;
    let ack = later
        .request(json!({"op": "resume", "positions": {
            "topic:ticker.abc": heads[0], "topic:orders.9": heads[1]
        }}))
        .await;
    assert_eq!(ack["op"], "ack", "{ack}");
    let replayed = later.barrier().await;
    let types: Vec<&str> = replayed.iter().filter_map(|f| f["type"].as_str()).collect();
    assert_eq!(types, ["order.paid"], "{replayed:?}");
}

#[tokio::test]
async fn without_namespaces_topics_behave_as_before() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let mut alice = s.connect(&w.alice.token).await;
    assert_eq!(answer(&mut alice, "topic:anything.at.all").await, "ack");
    let refused = client_publish(&mut alice, "topic:anything.at.all", json!({})).await;
    assert_eq!(refused["code"], "not_found", "{refused}");
    publish(&s, "topic:anything.at.all", "x", json!({"any": "thing"}))
        .await
        .expect_status(StatusCode::ACCEPTED);
    assert_eq!(s.refused_upgrade(None).await, StatusCode::UNAUTHORIZED);
    let listed = s
        .get("/api/v1/namespaces", ADMIN_TOKEN)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(listed.body, json!([]));
}

#[tokio::test]
async fn admins_list_the_namespaces() {
    let s = gateway().await;
    let w = s.world().await;
    let listed = s
        .get("/api/v1/namespaces", ADMIN_TOKEN)
        .await
        .expect_status(StatusCode::OK);
    let names: Vec<&str> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["news", "rooms", "orders", "inbox", "ops", "ticker"]);
    assert_eq!(listed.body[2]["schema"]["required"], json!(["amount"]));
    assert_eq!(listed.body[5]["retention_events"], 0);
    s.get("/api/v1/namespaces", &w.alice.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn a_bad_declaration_stops_the_start_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = chorus_server::Config {
        data_dir: dir.path().to_path_buf(),
        ..chorus_server::Config::default()
    };
    config.namespaces = vec![namespace("inbox", "topic:inbox.{id}", "user", "server")];
    let err = chorus_server::build(config).await.err().expect("refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("inbox") && text.contains("{user_id}"),
        "{text}"
    );
}

/// A reload (SIGHUP's work) changes the rules for what comes next; connections stay
/// open and keep their subscriptions. A bad declaration changes nothing.
#[tokio::test]
async fn a_reload_changes_the_rules_without_dropping_sockets() {
    let s = gateway().await;
    let w = s.world().await;
    let mut alice = s.connect(&w.alice.token).await;
    assert_eq!(answer(&mut alice, "topic:orders.1").await, "ack");
    assert_eq!(answer(&mut alice, "topic:late.1").await, "not_found");

    let mut more = namespaces();
    more.push(namespace(
        "late",
        "topic:late.{id}",
        "authenticated",
        "authenticated",
    ));
    let count = chorus_server::reload_namespaces(s.state(), more).unwrap();
    assert_eq!(count, 7);
    assert_eq!(answer(&mut alice, "topic:late.1").await, "ack");
    let ack = client_publish(&mut alice, "topic:late.1", json!({})).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    alice.expect_event("said").await;

    let bad = vec![namespace("inbox", "topic:inbox.{id}", "user", "server")];
    assert!(chorus_server::reload_namespaces(s.state(), bad).is_err());
    assert_eq!(
        answer(&mut alice, "topic:late.2").await,
        "ack",
        "the rules stayed"
    );
    // A file emptied of namespaces would open every topic to everyone: refused too.
    let none = chorus_server::reload_namespaces(s.state(), Vec::new());
    assert!(
        none.as_ref()
            .is_err_and(|e| e.to_string().contains("no namespace")),
        "{none:?}"
    );
    let bobs = format!("topic:notifications.user.{}", w.bob.id);
    assert_eq!(
        answer(&mut alice, &bobs).await,
        "forbidden",
        "the rules stayed"
    );
    // The socket never dropped: the subscription made before both reloads delivers.
    publish(&s, "topic:orders.1", "order.paid", json!({"amount": 5}))
        .await
        .expect_status(StatusCode::ACCEPTED);
    let got = alice.expect_event("order.paid").await;
    assert_eq!(got["data"]["amount"], 5);
}

/// A reload that makes a rule stricter ends, on the live connections, the
/// subscriptions the new rule refuses — `subscription.revoked {reason:
/// "namespaces_changed"}`, the mechanism a demotion uses — and keeps the ones it still
/// allows, with nothing lost; no socket closes.
#[tokio::test]
async fn a_stricter_reload_ends_the_subscriptions_it_refuses() {
    let with_ops = |read: &str| {
        let mut all = namespaces();
        let ops = all.iter_mut().find(|n| n.name == "ops").unwrap();
        ops.read = read.into();
        all
    };
    let s = TestServer::start_with(|c| c.namespaces = with_ops("authenticated")).await;
    let w = s.world().await;
    bob_made(&s, &w, "admin").await;
    let ops = format!("topic:ws.{}.ops", w.ws);
    // carol is a member, bob an admin: both may read ops while it is `authenticated`.
    let mut carol = s.connect(&w.carol.token).await;
    let mut bob = s.connect(&w.bob.token).await;
    for client in [&mut carol, &mut bob] {
        assert_eq!(answer(client, &ops).await, "ack");
        assert_eq!(answer(client, "topic:news").await, "ack");
        assert_eq!(answer(client, "topic:orders.1").await, "ack");
    }

    let count = chorus_server::reload_namespaces(s.state(), with_ops("role:admin")).unwrap();
    assert_eq!(count, 6);
    let revoked = carol.expect_event("subscription.revoked").await;
    assert_eq!(revoked["scope"], ops);
    assert_eq!(revoked["data"]["reason"], "namespaces_changed");

    publish(&s, &ops, "alert", json!({}))
        .await
        .expect_status(StatusCode::ACCEPTED);
    publish(&s, "topic:news", "marker", json!({}))
        .await
        .expect_status(StatusCode::ACCEPTED);
    // bob, still allowed: ops continues and no revocation came. The alert and the
    // marker are in two scopes, so they may come in either order (order holds within
    // a scope, not across scopes).
    let (mut alert, mut marker) = (false, false);
    while !(alert && marker) {
        let frame = bob.recv_json().await;
        assert_ne!(frame["type"], "subscription.revoked", "{frame}");
        if frame["type"] == "alert" {
            assert_eq!(frame["scope"], ops);
            alert = true;
        }
        marker |= frame["type"] == "marker";
    }
    // carol: nothing of ops after the revocation. Both events reached bob, so whatever
    // their delivery queued for carol is queued before her barrier's ack.
    let frames = carol.barrier().await;
    assert!(
        frames.iter().all(|f| f["type"] != "alert"),
        "delivered after the revocation: {frames:?}"
    );
    assert!(frames.iter().any(|f| f["type"] == "marker"), "{frames:?}");
    // The sockets stayed: carol's connection answers ops, and the other subscriptions
    // made before the reload still deliver.
    carol.ping().await;
    assert_eq!(answer(&mut carol, &ops).await, "forbidden");
    publish(&s, "topic:orders.1", "order.paid", json!({"amount": 1}))
        .await
        .expect_status(StatusCode::ACCEPTED);
    carol.expect_event("order.paid").await;
    bob.expect_event("order.paid").await;
    s.check_invariants();
}

/// Anonymous connections follow the upgrade's rule for their whole life: they exist
/// while some namespace is `read = "public"`. A reload that leaves one readable keeps
/// them open (they lose only what it refuses, and still publish where
/// `publish = "public"`); a reload that leaves none closes every one of them on the
/// node with 3502, as a new anonymous upgrade is then refused. Authenticated sockets
/// stay.
#[tokio::test]
async fn a_reload_leaving_nothing_public_closes_anonymous_connections() {
    let with_reads = |rooms: &str, news: &str| {
        let mut all = namespaces();
        for n in &mut all {
            match n.name.as_str() {
                "rooms" => n.read = rooms.into(),
                "news" => n.read = news.into(),
                _ => {}
            }
        }
        all
    };
    let s = gateway().await;
    let w = s.world().await;
    let mut reader = s.connect_anonymous().await;
    assert_eq!(answer(&mut reader, "topic:room.lobby").await, "ack");
    assert_eq!(answer(&mut reader, "topic:news").await, "ack");
    // One that subscribed to nothing: no re-check concerns it, it must close all the same.
    let mut idle = s.connect_anonymous().await;
    idle.ping().await;
    let mut alice = s.connect(&w.alice.token).await;
    assert_eq!(answer(&mut alice, "topic:room.lobby").await, "ack");

    // rooms becomes readable by users only, its publish stays public; news is still
    // public: anonymous connections are still admitted, so these stay.
    chorus_server::reload_namespaces(s.state(), with_reads("authenticated", "public")).unwrap();
    let revoked = reader.expect_event("subscription.revoked").await;
    assert_eq!(revoked["scope"], "topic:room.lobby");
    assert_eq!(revoked["data"]["reason"], "namespaces_changed");
    let ack = client_publish(&mut reader, "topic:room.lobby", json!({"text": "hi"})).await;
    assert_eq!(ack["op"], "ack", "publish stays public: {ack}");
    alice.expect_event("said").await;
    idle.ping().await;
    let _still_admitted = s.connect_anonymous().await;

    // Nothing readable by the public is left (rooms' publish still is): a new anonymous
    // upgrade is refused, and the open ones close.
    chorus_server::reload_namespaces(s.state(), with_reads("authenticated", "authenticated"))
        .unwrap();
    assert_eq!(reader.expect_close().await, Some(3502));
    assert_eq!(idle.expect_close().await, Some(3502));
    assert_eq!(s.refused_upgrade(None).await, StatusCode::UNAUTHORIZED);
    // The authenticated socket stayed, with its subscription.
    alice.ping().await;
    publish(&s, "topic:room.lobby", "said", json!({"text": "server"}))
        .await
        .expect_status(StatusCode::ACCEPTED);
    alice.expect_event("said").await;

    // Public again: anonymous connections are admitted again.
    chorus_server::reload_namespaces(s.state(), namespaces()).unwrap();
    let mut again = s.connect_anonymous().await;
    assert_eq!(answer(&mut again, "topic:news").await, "ack");
    s.check_invariants();
}

/// The documented example configuration parses and compiles.
#[test]
fn the_example_configuration_is_valid() {
    let text = include_str!("../../../docs/gateway.example.toml");
    let config: chorus_server::Config = toml::from_str(text).unwrap();
    assert_eq!(config.namespaces.len(), 7);
    assert_eq!(
        config.namespaces[1].schema.as_ref().unwrap()["required"],
        json!(["status", "amount"])
    );
    assert_eq!(config.namespaces[0].retention_events, Some(50));
    let rooms = &config.namespaces[6];
    assert!(rooms.presence && rooms.join_leave, "{rooms:?}");
    // Its proxies are complete for its `proxy` namespaces.
    assert!(
        chorus_server::proxies::Proxies::from_config(&config)
            .unwrap()
            .is_some()
    );
    chorus_chat::namespaces::Namespaces::new(config.namespaces).unwrap();
}

/// `n` server publishes to `scope`; their offsets.
async fn publish_n(s: &TestServer, scope: &str, n: u64) -> Vec<u64> {
    let mut offsets = Vec::new();
    for i in 0..n {
        let sent = publish(s, scope, "tick", json!({"amount": i}))
            .await
            .expect_status(StatusCode::ACCEPTED);
        offsets.push(sent.body["offset"].as_u64().expect("an offset"));
    }
    offsets
}

/// A `subscribe` with `since` on a new connection: `recovered` and the replayed
/// events' offsets.
async fn replay_since(s: &TestServer, token: &str, scope: &str, since: u64) -> (bool, Vec<u64>) {
    let mut client = s.connect(token).await;
    let ack = client
        .request(json!({"op": "subscribe", "scope": scope, "since": since}))
        .await;
    assert_eq!(ack["op"], "ack", "{ack}");
    let replayed = client
        .barrier()
        .await
        .iter()
        .filter(|f| f["scope"] == scope)
        .map(|f| f["offset"].as_u64().unwrap())
        .collect();
    (ack["recovered"].as_bool().unwrap(), replayed)
}

/// The HTTP catch-up after `after`: the events' offsets, or the error status.
async fn catch_up(s: &TestServer, token: &str, scope: &str, after: u64) -> Result<Vec<u64>, u16> {
    let path = format!(
        "/api/v1/scopes/{}/events?after={after}",
        scope.replace(':', "%3A")
    );
    let resp = s.get(&path, token).await;
    if resp.status != StatusCode::OK {
        assert_eq!(resp.body["error"]["code"], "gone", "{}", resp.text);
        return Err(resp.status.as_u16());
    }
    Ok(resp.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect())
}

fn with_retention(events: Option<u64>, secs: Option<u64>) -> Vec<Namespace> {
    let mut all = namespaces();
    let mut recent = namespace("recent", "topic:recent.{id}", "authenticated", "server");
    recent.retention_events = events;
    recent.retention_secs = secs;
    all.insert(0, recent);
    all
}

/// `retention_events = 3`: a topic of the namespace keeps exactly its last three events
/// for `since` / `resume` and the HTTP catch-up, whatever the server keeps; further back
/// is `recovered: false` and `410 gone`. A topic of another namespace keeps the
/// server's window (here: everything); one with `retention_events = 0` keeps nothing.
#[tokio::test]
async fn a_namespace_retention_keeps_exactly_its_last_events() {
    let s = TestServer::start_with(|c| c.namespaces = with_retention(Some(3), None)).await;
    let w = s.world().await;
    let token = &w.alice.token;
    let o = publish_n(&s, "topic:recent.1", 5).await;

    assert_eq!(
        replay_since(&s, token, "topic:recent.1", o[1]).await,
        (true, o[2..].to_vec()),
        "the last three"
    );
    assert_eq!(
        replay_since(&s, token, "topic:recent.1", o[0]).await,
        (false, vec![]),
        "the fourth from the end is gone"
    );
    let mut resuming = s.connect(token).await;
    let ack = resuming
        .request(json!({"op": "resume", "positions": {"topic:recent.1": o[0]}}))
        .await;
    assert_eq!(ack["scopes"]["topic:recent.1"]["recovered"], false, "{ack}");
    assert_eq!(
        catch_up(&s, token, "topic:recent.1", o[1]).await,
        Ok(o[2..].to_vec())
    );
    assert_eq!(catch_up(&s, token, "topic:recent.1", o[0]).await, Err(410));

    // The server's window elsewhere: all five.
    let orders = publish_n(&s, "topic:orders.1", 5).await;
    assert_eq!(
        replay_since(&s, token, "topic:orders.1", orders[0] - 1).await,
        (true, orders.clone())
    );
    assert_eq!(
        catch_up(&s, token, "topic:orders.1", orders[0] - 1).await,
        Ok(orders)
    );

    // After a restart too (the window is read from the event log then).
    let mut s = s;
    s.restart().await;
    assert_eq!(
        replay_since(&s, token, "topic:recent.1", o[1]).await,
        (true, o[2..].to_vec())
    );
    assert_eq!(
        replay_since(&s, token, "topic:recent.1", o[0]).await,
        (false, vec![])
    );
}

/// `retention_secs`: events older than the namespace's age are gone for it, while the
/// server (24 h) still keeps those of other namespaces. Judged on the server's clock: the
/// same data, restarted with a clock two minutes later.
#[tokio::test]
async fn a_namespace_retention_age_applies_on_the_servers_clock() {
    let start = chorus_server::Clock::system().now_ms();
    let mut s = TestServer::start_with(|c| {
        c.namespaces = with_retention(None, Some(60));
        c.clock = chorus_server::Clock::following_tokio(start);
    })
    .await;
    let w = s.world().await;
    let token = &w.alice.token;
    let recent = publish_n(&s, "topic:recent.1", 2).await;
    let orders = publish_n(&s, "topic:orders.1", 2).await;
    assert_eq!(
        replay_since(&s, token, "topic:recent.1", recent[0] - 1).await,
        (true, recent.clone()),
        "within the minute"
    );

    s.restart_with(|c| {
        c.namespaces = with_retention(None, Some(60));
        c.clock = chorus_server::Clock::following_tokio(start + 120_000);
    })
    .await;
    assert_eq!(
        replay_since(&s, token, "topic:recent.1", recent[0] - 1).await,
        (false, vec![])
    );
    assert_eq!(
        catch_up(&s, token, "topic:recent.1", recent[0] - 1).await,
        Err(410)
    );
    assert_eq!(
        replay_since(&s, token, "topic:orders.1", orders[0] - 1).await,
        (true, orders.clone())
    );
    assert_eq!(
        catch_up(&s, token, "topic:orders.1", orders[0] - 1).await,
        Ok(orders)
    );
}

/// A reload changes a namespace's window for the next resume and catch-up: narrowed to
/// two, the third from the end is gone; widened again, the event log still had it.
#[tokio::test]
async fn a_reload_changes_a_namespace_retention() {
    let s = TestServer::start_with(|c| c.namespaces = with_retention(Some(3), None)).await;
    let w = s.world().await;
    let token = &w.alice.token;
    let o = publish_n(&s, "topic:recent.1", 4).await;
    assert_eq!(
        catch_up(&s, token, "topic:recent.1", o[0]).await,
        Ok(o[1..].to_vec())
    );

    chorus_server::reload_namespaces(s.state(), with_retention(Some(2), None)).unwrap();
    assert_eq!(
        replay_since(&s, token, "topic:recent.1", o[0]).await,
        (false, vec![])
    );
    assert_eq!(catch_up(&s, token, "topic:recent.1", o[0]).await, Err(410));
    assert_eq!(
        replay_since(&s, token, "topic:recent.1", o[1]).await,
        (true, o[2..].to_vec())
    );

    chorus_server::reload_namespaces(s.state(), with_retention(Some(10), None)).unwrap();
    assert_eq!(
        replay_since(&s, token, "topic:recent.1", o[0] - 1).await,
        (true, o.clone())
    );
    assert_eq!(
        catch_up(&s, token, "topic:recent.1", o[0] - 1).await,
        Ok(o.clone())
    );
    // Declaring no retention: the server's window.
    chorus_server::reload_namespaces(s.state(), with_retention(None, None)).unwrap();
    assert_eq!(catch_up(&s, token, "topic:recent.1", o[0] - 1).await, Ok(o));
}

/// `after` must be a position the server gave (an event's offset, a subscribe ack's
/// `offset`, `hello`'s `offsets`): offsets start at a large base, so `after=0` is no
/// position of this database and answers `410 gone`, as a resume from 0 answers
/// `recovered: false` — even right after the topic's first event. In a namespace
/// without history nothing is logged: from the ack's offset the catch-up is empty.
#[tokio::test]
async fn catching_up_from_zero_is_gone_and_from_a_given_offset_is_complete() {
    let s = gateway().await;
    let w = s.world().await;
    let token = &w.alice.token;
    let mut alice = s.connect(token).await;
    let head = alice.subscribe("topic:room.lobby").await["offset"]
        .as_u64()
        .unwrap();
    let ack = client_publish(&mut alice, "topic:room.lobby", json!({"text": "hi"})).await;
    let offset = ack["offset"].as_u64().unwrap();
    assert_eq!(offset, head + 1);
    assert_eq!(catch_up(&s, token, "topic:room.lobby", 0).await, Err(410));
    assert_eq!(
        replay_since(&s, token, "topic:room.lobby", 0).await,
        (false, vec![])
    );
    assert_eq!(
        catch_up(&s, token, "topic:room.lobby", head).await,
        Ok(vec![offset])
    );

    let head = alice.subscribe("topic:ticker.abc").await["offset"]
        .as_u64()
        .unwrap();
    let ack = client_publish(&mut alice, "topic:ticker.abc", json!({})).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    assert!(ack.get("offset").is_none_or(Value::is_null), "{ack}");
    assert_eq!(
        catch_up(&s, token, "topic:ticker.abc", head).await,
        Ok(vec![])
    );
    assert_eq!(catch_up(&s, token, "topic:ticker.abc", 0).await, Err(410));
}

fn watched_namespaces() -> Vec<Namespace> {
    let mut lobby = namespace("lobby", "topic:lobby.{id}", "public", "public");
    lobby.presence = true;
    lobby.join_leave = true;
    let mut desk = namespace("desk", "topic:desk.{user_id}", "user", "user");
    desk.presence = true;
    let mut all = vec![lobby, desk];
    all.extend(namespaces());
    all
}

/// The next `subscriber.joined` / `subscriber.left` of `scope` (other frames skipped).
async fn next_change(client: &mut WsClient, scope: &str) -> Value {
    loop {
        let frame = client.recv_json().await;
        let kind = frame["type"].as_str().unwrap_or("");
        if frame["scope"] == scope && kind.starts_with("subscriber.") {
            assert!(frame.get("offset").is_none(), "ephemeral: {frame}");
            return json!({"type": kind, "data": frame["data"]});
        }
    }
}

fn change(kind: &str, user_id: i64, session: &Value) -> Value {
    let mut data = json!({"user_id": user_id, "session_id": session});
    if user_id == 0 {
        data["anonymous"] = json!(true);
    }
    json!({"type": kind, "data": data})
}

async fn presence_of(s: &TestServer, token: &str, scope: &str) -> Vec<Value> {
    let path = format!("/api/v1/scopes/{}/presence", scope.replace(':', "%3A"));
    let got = s.get(&path, token).await.expect_status(StatusCode::OK).body;
    assert_eq!(got["scope"], scope);
    got["subscribers"].as_array().unwrap().clone()
}

/// `join_leave = true`: a topic's subscribers receive `subscriber.joined` /
/// `subscriber.left` (ephemeral) as other connections subscribe and stop — by
/// `unsubscribe` or by closing — anonymous ones as user 0 with `anonymous: true`.
/// `presence = true`: who is subscribed can be read over HTTP, one entry per
/// connection. A namespace with neither sends no such events and has no presence.
#[tokio::test]
async fn join_leave_events_and_presence_of_a_topic() {
    let s = TestServer::start_with(|c| c.namespaces = watched_namespaces()).await;
    let w = s.world().await;
    let lobby = "topic:lobby.1";
    let mut alice = s.connect(&w.alice.token).await;
    let alice_session = alice.hello["session_id"].clone();
    assert_eq!(answer(&mut alice, lobby).await, "ack");
    // Its own join comes back too (it knows its `session_id` from `hello`).
    assert_eq!(
        next_change(&mut alice, lobby).await,
        change("subscriber.joined", w.alice.id, &alice_session)
    );

    let mut bob = s.connect(&w.bob.token).await;
    assert_eq!(answer(&mut bob, lobby).await, "ack");
    let bob_session = bob.hello["session_id"].clone();
    assert_eq!(
        next_change(&mut alice, lobby).await,
        change("subscriber.joined", w.bob.id, &bob_session)
    );
    let mut anon = s.connect_anonymous().await;
    assert_eq!(answer(&mut anon, lobby).await, "ack");
    let anon_session = anon.hello["session_id"].clone();
    assert_eq!(
        next_change(&mut alice, lobby).await,
        change("subscriber.joined", 0, &anon_session)
    );
    assert_eq!(
        next_change(&mut anon, lobby).await,
        change("subscriber.joined", 0, &anon_session),
        "anonymous subscribers receive them too"
    );

    let mut expected = vec![
        change("", w.alice.id, &alice_session)["data"].clone(),
        change("", w.bob.id, &bob_session)["data"].clone(),
        change("", 0, &anon_session)["data"].clone(),
    ];
    expected.sort_by_key(|v| (v["user_id"].as_i64(), v["session_id"].to_string()));
    assert_eq!(presence_of(&s, &w.carol.token, lobby).await, expected);

    let ack = bob
        .request(json!({"op": "unsubscribe", "scope": lobby}))
        .await;
    assert_eq!(ack["op"], "ack", "{ack}");
    assert_eq!(
        next_change(&mut alice, lobby).await,
        change("subscriber.left", w.bob.id, &bob_session)
    );
    anon.close().await;
    assert_eq!(
        next_change(&mut alice, lobby).await,
        change("subscriber.left", 0, &anon_session)
    );
    assert_eq!(
        presence_of(&s, &w.alice.token, lobby).await,
        [change("", w.alice.id, &alice_session)["data"].clone()]
    );

    // Presence without join/leave: readable by whom the namespace lets read it.
    let desk = format!("topic:desk.{}", w.bob.id);
    assert_eq!(answer(&mut bob, &desk).await, "ack");
    assert_eq!(
        presence_of(&s, &w.bob.token, &desk).await,
        [change("", w.bob.id, &bob_session)["data"].clone()]
    );
    let path = format!("/api/v1/scopes/{}/presence", desk.replace(':', "%3A"));
    s.get(&path, &w.alice.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    // Neither: no presence, and no join events before the marker.
    s.get("/api/v1/scopes/topic%3Aorders.1/presence", &w.alice.token)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    s.get(
        &format!("/api/v1/scopes/workspace%3A{}/presence", w.ws),
        &w.alice.token,
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(answer(&mut alice, "topic:orders.1").await, "ack");
    assert_eq!(answer(&mut bob, "topic:orders.1").await, "ack");
    publish(&s, "topic:orders.1", "marker", json!({"amount": 1}))
        .await
        .expect_status(StatusCode::ACCEPTED);
    loop {
        let frame = alice.recv_json().await;
        assert!(
            !(frame["scope"] == "topic:orders.1"
                && frame["type"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("subscriber.")),
            "{frame}"
        );
        if frame["type"] == "marker" {
            break;
        }
    }
    // A revocation ends presence too: a reload that shuts bob out of his desk, then
    // one that lets him in again (he has not subscribed since).
    let mut stricter = watched_namespaces();
    stricter[1].read = "role:nobody".into();
    chorus_server::reload_namespaces(s.state(), stricter).unwrap();
    let revoked = bob.expect_event("subscription.revoked").await;
    assert_eq!(revoked["scope"], desk);
    chorus_server::reload_namespaces(s.state(), watched_namespaces()).unwrap();
    assert_eq!(
        presence_of(&s, &w.bob.token, &desk).await,
        Vec::<Value>::new()
    );
}

/// A topic read by a workspace role is read since the role was given (the access rule):
/// bob, made an admin after an alert, gets nothing of before it from a position of
/// before — `recovered: false`, 410 over HTTP — and what came after, from a position
/// after; alice, the owner all along, gets it all.
#[tokio::test]
async fn a_role_namespace_replays_nothing_from_before_the_role() {
    let s = gateway().await;
    let w = s.world().await;
    let ops = format!("topic:ws.{}.ops", w.ws);
    let before = publish_n(&s, &ops, 1).await[0];
    // The log's times are to the millisecond: the promotion comes after the alert.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    bob_made(&s, &w, "admin").await;
    let after = publish_n(&s, &ops, 1).await[0];

    assert_eq!(
        replay_since(&s, &w.bob.token, &ops, before - 1).await,
        (false, vec![])
    );
    assert_eq!(catch_up(&s, &w.bob.token, &ops, before - 1).await, Err(410));
    assert_eq!(
        replay_since(&s, &w.bob.token, &ops, before).await,
        (true, vec![after])
    );
    assert_eq!(
        catch_up(&s, &w.bob.token, &ops, before).await,
        Ok(vec![after])
    );
    assert_eq!(
        replay_since(&s, &w.alice.token, &ops, before - 1).await,
        (true, vec![before, after])
    );
    assert_eq!(
        catch_up(&s, &w.alice.token, &ops, before - 1).await,
        Ok(vec![before, after])
    );
}

/// The bound of a replay (since when the reader's access holds) is read after the
/// authorization. A removal from the workspace that commits in between leaves no row to
/// bound it by, and that must refuse the replay as the authorization now would, never
/// lift the bound (the whole window, from before the reader ever had the role, was
/// replayed). Asked of the bound itself, as the subscribe and the HTTP catch-up ask it:
/// who is no member reads only by the credential's role or as the server's
/// administrator, unbounded as before.
#[tokio::test]
async fn a_reader_removed_after_the_authorization_is_refused_not_replayed_without_bound() {
    use chorus_chat::error::ChatError;
    use chorus_chat::model::UserId;
    use chorus_realtime::Scope;

    let s = gateway().await;
    let w = s.world().await;
    // Bob reads `general` through the workspace (no member of it) and `ops` as admin.
    let general = s
        .create_channel(&w.alice, w.ws, "general", "public", &[])
        .await;
    bob_made(&s, &w, "admin").await;
    let ops = Scope::parse(&format!("topic:ws.{}.ops", w.ws)).unwrap();
    let channel = Scope::parse(&format!("channel:{general}")).unwrap();
    let chat = &s.state().chat;
    let bob = UserId(w.bob.id);
    for scope in [&ops, &channel] {
        let since = chat.access_since(bob, &[], scope).await.unwrap();
        assert!(since.is_some(), "{scope}: bounded by bob's role or join");
    }

    s.delete(
        &format!("/api/v1/workspaces/{}/members/{}", w.ws, w.bob.id),
        &w.alice.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    for scope in [&ops, &channel] {
        let answer = chat.access_since(bob, &[], scope).await;
        assert!(
            matches!(answer, Err(ChatError::Forbidden(_))),
            "{scope}: {answer:?}"
        );
    }
    // A credential carrying the role reads `ops` with no membership.
    let by_role = chat.access_since(bob, &["admin".into()], &ops).await;
    assert_eq!(by_role.unwrap(), None);
    // So does the server's administrator, a member of nothing here.
    let admin = s.admin_id().await;
    for scope in [&ops, &channel] {
        let answer = chat.access_since(UserId(admin), &[], scope).await;
        assert_eq!(answer.unwrap(), None, "{scope}");
    }
}
