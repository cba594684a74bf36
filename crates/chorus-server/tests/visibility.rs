//! What others may see, with real clients: an agent's webhook (its URL, which may carry a
//! secret, its signing secret, its deliveries) only the agent itself and server admins;
//! `is_admin` only admins and the user themself; and a server admin administers but does
//! not read private channels or DMs it is not a member of, over HTTP or the socket.

#![allow(clippy::unwrap_used)]

mod common;

use common::{ADMIN_TOKEN, TestServer, TestUser, WsClient};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A secret in the webhook URL's query string, as some receivers authenticate.
const QUERY_SECRET: &str = "q-secret-7f3a9c51e2";
/// The webhook's signing secret.
const SIGNING_SECRET: &str = "whsec-signing-secret-0123456789abcdef";
/// The fields of a user everyone else sees.
const PROFILE_KEYS: [&str; 6] = [
    "created_at",
    "display_name",
    "id",
    "kind",
    "name",
    "status_text",
];

fn webhook_url() -> String {
    // `.invalid` never resolves: nothing is ever delivered there.
    format!("http://agent-hooks.invalid/chorus?token={QUERY_SECRET}")
}

/// Creates a user with the admin token from a full request body.
async fn create(s: &TestServer, body: Value) -> (TestUser, Value) {
    let resp = s
        .post("/api/v1/users", ADMIN_TOKEN, body)
        .await
        .expect_status(StatusCode::CREATED);
    let user = TestUser {
        id: resp.body["user"]["id"].as_i64().unwrap(),
        name: resp.body["user"]["name"].as_str().unwrap().to_owned(),
        token: resp.body["token"].as_str().unwrap().to_owned(),
    };
    (user, resp.body)
}

/// The agent with a webhook, created by the admin.
async fn create_agent(s: &TestServer) -> TestUser {
    let (bot, body) = create(
        s,
        json!({
            "name": "bot",
            "kind": "agent",
            "webhook_url": webhook_url(),
            "webhook_secret": SIGNING_SECRET,
        }),
    )
    .await;
    // The admin who created it is shown everything, once.
    assert_eq!(body["user"]["webhook_url"], webhook_url());
    assert_eq!(body["webhook_secret"], SIGNING_SECRET);
    bot
}

/// Asserts that `text` (a raw response body or frame) shows nothing private of a user.
#[track_caller]
fn shows_nothing_private(what: &str, text: &str) {
    for needle in [
        QUERY_SECRET,
        SIGNING_SECRET,
        "webhook_url",
        "webhook_secret",
        "agent-hooks.invalid",
        "is_admin",
    ] {
        assert!(!text.contains(needle), "{what} shows {needle:?}: {text}");
    }
}

/// Keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn members_and_guests_never_see_a_webhook_or_another_users_admin_flag() {
    let s = TestServer::start().await;
    let alice = s.create_user("alice").await; // owns the workspace; not a server admin
    let bob = s.create_user("bob").await;
    let gus = s.create_user("gus").await;
    let ws = s.create_workspace(&alice, "acme").await;
    s.add_member(&alice, ws, &bob, "member").await;
    s.add_member(&alice, ws, &gus, "guest").await;
    let general = s
        .create_channel(&alice, ws, "general", "public", &[&bob, &gus])
        .await;

    let mut bob_ws = s.connect(&bob.token).await;
    let mut gus_ws = s.connect(&gus.token).await;
    bob_ws.presence = true;
    gus_ws.presence = true;

    // Joining the workspace after them: the agent, and a server admin.
    let bot = create_agent(&s).await;
    let (ops, _) = create(&s, json!({"name": "ops", "admin": true})).await;
    let mut seen_by_owner = Vec::new();
    for user in [&bot, &ops] {
        let added = s
            .post(
                &format!("/api/v1/workspaces/{ws}/members"),
                &alice.token,
                json!({"user_id": user.id, "role": "member"}),
            )
            .await
            .expect_status(StatusCode::CREATED);
        assert_eq!(keys(&added.body["user"]), PROFILE_KEYS);
        seen_by_owner.push(added.text);
    }
    s.add_channel_member(&alice, general, &bot).await;
    // The agent comes online (presence) and writes, with a thread and a reaction.
    let mut bot_ws = s.connect(&bot.token).await;
    let root = s.send(&bot, general, "hello @bob").await;
    let root_id = root["id"].as_i64().unwrap();
    s.post(
        &format!("/api/v1/channels/{general}/messages"),
        &bot.token,
        json!({"text": "a reply", "thread_id": root_id}),
    )
    .await
    .expect_status(StatusCode::CREATED);
    s.call(
        reqwest::Method::PUT,
        &format!("/api/v1/messages/{root_id}/reactions/%F0%9F%91%8D"),
        Some(&bot.token),
        None,
    )
    .await;
    bot_ws.ping().await;

    // Every event either socket received.
    for (who, client) in [("bob", &mut bob_ws), ("gus", &mut gus_ws)] {
        let frames = client.barrier().await;
        let joined: Vec<&Value> = frames
            .iter()
            .filter(|f| f["type"] == "workspace.member_joined")
            .collect();
        assert_eq!(joined.len(), 2, "{who}: {frames:?}");
        assert_eq!(joined[0]["data"]["user"]["name"], "bot");
        assert_eq!(joined[1]["data"]["user"]["name"], "ops");
        for event in &joined {
            assert_eq!(keys(&event["data"]["user"]), PROFILE_KEYS);
        }
        assert!(
            frames.iter().any(|f| f["type"] == "message.created"),
            "{who}: {frames:?}"
        );
        for frame in &frames {
            shows_nothing_private(&format!("{who}'s frame"), &frame.to_string());
        }
    }
    for text in &seen_by_owner {
        shows_nothing_private("the owner's add-member answer", text);
    }

    // Every HTTP view of the workspace, its users, channels and messages.
    for viewer in [&bob, &gus, &alice] {
        let members = s
            .get(&format!("/api/v1/workspaces/{ws}/members"), &viewer.token)
            .await
            .expect_status(StatusCode::OK);
        let listed = members.body.as_array().unwrap();
        assert_eq!(listed.len(), 5);
        for member in listed {
            assert_eq!(keys(&member["user"]), PROFILE_KEYS);
        }
        let mut views = vec![(format!("{}: members", viewer.name), members.text)];
        for (label, path) in [
            ("the agent", format!("/api/v1/users/{}", bot.id)),
            ("the admin", format!("/api/v1/users/{}", ops.id)),
            ("the channel", format!("/api/v1/channels/{general}")),
            ("the channels", format!("/api/v1/workspaces/{ws}/channels")),
            (
                "the history",
                format!("/api/v1/channels/{general}/messages"),
            ),
            (
                "the thread",
                format!("/api/v1/channels/{general}/messages?thread_id={root_id}"),
            ),
            ("the presence", format!("/api/v1/workspaces/{ws}/presence")),
            ("the pins", format!("/api/v1/channels/{general}/pins")),
        ] {
            let resp = s
                .get(&path, &viewer.token)
                .await
                .expect_status(StatusCode::OK);
            views.push((format!("{}: {label}", viewer.name), resp.text));
        }
        for (what, text) in &views {
            shows_nothing_private(what, text);
        }
        let agent = s
            .get(&format!("/api/v1/users/{}", bot.id), &viewer.token)
            .await
            .body;
        assert_eq!(keys(&agent), PROFILE_KEYS);
        assert_eq!(agent["kind"], "agent");

        // The webhook's settings and deliveries are the agent's and the admins' only.
        let deliveries = s
            .get(
                &format!("/api/v1/users/{}/webhook-deliveries", bot.id),
                &viewer.token,
            )
            .await
            .expect_error(StatusCode::FORBIDDEN, "forbidden");
        shows_nothing_private("a refused delivery log", &deliveries.text);
        s.call(
            reqwest::Method::PUT,
            &format!("/api/v1/users/{}/webhook", bot.id),
            Some(&viewer.token),
            Some(json!({"url": "http://elsewhere.invalid/x"})),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    }

    // Someone sharing no workspace is not found, admin or not.
    let (root, _) = create(&s, json!({"name": "root", "admin": true})).await;
    let loner = s.create_user("loner").await;
    for stranger in [&root, &loner] {
        s.get(&format!("/api/v1/users/{}", stranger.id), &bob.token)
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
    }
    s.get("/api/v1/users/999999", &bob.token)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    // One's own record stays whole.
    let me = s
        .get(&format!("/api/v1/users/{}", bob.id), &bob.token)
        .await
        .expect_status(StatusCode::OK)
        .body;
    assert_eq!(me["is_admin"], false);
    assert_eq!(
        s.get("/api/v1/me", &gus.token).await.body["is_admin"],
        false
    );
}

#[tokio::test]
async fn the_agent_itself_and_server_admins_see_its_webhook() {
    let s = TestServer::start().await;
    let alice = s.create_user("alice").await;
    let ws = s.create_workspace(&alice, "acme").await;
    let bot = create_agent(&s).await;
    s.add_member(&alice, ws, &bot, "member").await;
    let (root, _) = create(&s, json!({"name": "root", "admin": true})).await;

    // The agent: its whole record, its delivery log, its webhook settings.
    for path in ["/api/v1/me".to_owned(), format!("/api/v1/users/{}", bot.id)] {
        let own = s.get(&path, &bot.token).await.expect_status(StatusCode::OK);
        assert_eq!(own.body["webhook_url"], webhook_url(), "{path}");
        assert_eq!(own.body["is_admin"], false, "{path}");
    }
    // Server admins (a created one and the configured token): the same.
    for token in [root.token.as_str(), ADMIN_TOKEN] {
        let agent = s
            .get(&format!("/api/v1/users/{}", bot.id), token)
            .await
            .expect_status(StatusCode::OK)
            .body;
        assert_eq!(agent["webhook_url"], webhook_url());
        assert_eq!(agent["is_admin"], false);
        let admin = s
            .get(&format!("/api/v1/users/{}", root.id), token)
            .await
            .expect_status(StatusCode::OK)
            .body;
        assert_eq!(admin["is_admin"], true);
    }
    for token in [bot.token.as_str(), root.token.as_str(), ADMIN_TOKEN] {
        s.get(
            &format!("/api/v1/users/{}/webhook-deliveries", bot.id),
            token,
        )
        .await
        .expect_status(StatusCode::OK);
    }
    let set = s
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/users/{}/webhook", bot.id),
            Some(&bot.token),
            Some(json!({"url": webhook_url(), "secret": SIGNING_SECRET})),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(set.body["user"]["webhook_url"], webhook_url());

    // The workspace's owner, who is no server admin, sees the profile only.
    let seen = s
        .get(&format!("/api/v1/users/{}", bot.id), &alice.token)
        .await
        .expect_status(StatusCode::OK);
    shows_nothing_private("the owner's view of the agent", &seen.text);

    // The OpenAPI document says which is which.
    let doc = s
        .call(reqwest::Method::GET, "/openapi.json", None, None)
        .await
        .expect_status(StatusCode::OK)
        .body;
    assert!(doc["paths"]["/api/v1/users/{id}"]["get"].is_object());
    let schemas = &doc["components"]["schemas"];
    let profile = schemas["UserProfile"]["properties"].as_object().unwrap();
    let mut fields: Vec<&str> = profile.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, PROFILE_KEYS);
    assert_eq!(
        schemas["Member"]["properties"]["user"]["$ref"],
        "#/components/schemas/UserProfile"
    );
    assert!(schemas["User"]["properties"]["is_admin"].is_object());
}

#[tokio::test]
async fn a_server_admin_administers_but_does_not_read_private_channels_or_dms() {
    let s = TestServer::start().await;
    let alice = s.create_user("alice").await;
    let bob = s.create_user("bob").await;
    let ws = s.create_workspace(&alice, "acme").await;
    s.add_member(&alice, ws, &bob, "member").await;
    let secret = s
        .create_channel(&alice, ws, "secret", "private", &[&bob])
        .await;
    let private_root = s.send(&alice, secret, "private words").await["id"]
        .as_i64()
        .unwrap();
    let dm = s
        .post(
            &format!("/api/v1/workspaces/{ws}/dms"),
            &alice.token,
            json!({"user_ids": [bob.id]}),
        )
        .await
        .expect_status(StatusCode::CREATED)
        .body["id"]
        .as_i64()
        .unwrap();
    let dm_root = s.send(&alice, dm, "between us").await["id"]
        .as_i64()
        .unwrap();
    let (root, _) = create(&s, json!({"name": "root", "admin": true})).await;

    for token in [root.token.as_str(), ADMIN_TOKEN] {
        for ch in [secret, dm] {
            for path in [
                format!("/api/v1/channels/{ch}"),
                format!("/api/v1/channels/{ch}/messages"),
                format!("/api/v1/channels/{ch}/pins"),
            ] {
                let refused = s
                    .get(&path, token)
                    .await
                    .expect_error(StatusCode::FORBIDDEN, "forbidden");
                assert!(!refused.text.contains("private words"), "{path}");
                assert!(!refused.text.contains("between us"), "{path}");
            }
        }
        for (ch, root_id) in [(secret, private_root), (dm, dm_root)] {
            s.post(
                &format!("/api/v1/channels/{ch}/messages"),
                token,
                json!({"text": "hello?", "thread_id": root_id}),
            )
            .await
            .expect_error(StatusCode::FORBIDDEN, "forbidden");
            s.call(
                reqwest::Method::PUT,
                &format!("/api/v1/messages/{root_id}/reactions/eyes"),
                Some(token),
                None,
            )
            .await
            .expect_error(StatusCode::FORBIDDEN, "forbidden");
        }
        // The listing shows the admin neither.
        let channels = s
            .get(&format!("/api/v1/workspaces/{ws}/channels"), token)
            .await
            .expect_status(StatusCode::OK)
            .body;
        let ids: Vec<i64> = channels
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_i64().unwrap())
            .collect();
        assert!(!ids.contains(&secret) && !ids.contains(&dm), "{ids:?}");
    }

    // Nor on the socket: the channels and their threads are refused.
    let mut admin_ws: WsClient = s.connect(&root.token).await;
    for scope in [
        format!("channel:{secret}"),
        format!("thread:{private_root}"),
        format!("channel:{dm}"),
        format!("thread:{dm_root}"),
    ] {
        let reply = admin_ws.subscribe(&scope).await;
        assert_eq!(reply["op"], "error", "{scope}: {reply}");
        assert_eq!(reply["code"], "forbidden", "{scope}: {reply}");
    }
    // Later messages never reach it.
    s.send(&alice, secret, "still private").await;
    s.send(&alice, dm, "still between us").await;
    for frame in admin_ws.barrier().await {
        assert_ne!(frame["type"], "message.created", "{frame}");
    }

    // Administration goes on: the workspace's scope, its members, adding one.
    let ack = admin_ws.subscribe(&format!("workspace:{ws}")).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    let dave = s.create_user("dave").await;
    s.add_member(&root, ws, &dave, "member").await;
    s.get(&format!("/api/v1/workspaces/{ws}/members"), &root.token)
        .await
        .expect_status(StatusCode::OK);
    let joined = admin_ws.expect_event("workspace.member_joined").await;
    assert_eq!(joined["data"]["user"]["name"], "dave");

    // The members themselves still read both.
    for ch in [secret, dm] {
        assert_eq!(s.history(&bob, ch, "").await.len(), 2);
    }
}
