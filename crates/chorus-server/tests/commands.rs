//! Slash commands (issue 21) end to end: each built-in acts with its route's rules and
//! answers only its author; `//` posts a leading slash; an unknown command is a clear
//! `unknown_command`; a registered command wakes its agent on its socket, or by a
//! signed webhook (the agent's, or the command's own) to a real local HTTP server.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use axum::http::HeaderMap;
use common::{ADMIN_TOKEN, TestServer, TestUser, WAIT, World, WsClient};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

async fn create_agent(s: &TestServer, name: &str, webhook_url: Option<&str>) -> (TestUser, String) {
    let mut body = json!({ "name": name, "kind": "agent" });
    if let Some(url) = webhook_url {
        body["webhook_url"] = json!(url);
    }
    let resp = s
        .post("/api/v1/users", ADMIN_TOKEN, body)
        .await
        .expect_status(StatusCode::CREATED);
    let user = TestUser {
        id: resp.body["user"]["id"].as_i64().unwrap(),
        name: name.to_owned(),
        token: resp.body["token"].as_str().unwrap().to_owned(),
    };
    let secret = resp.body["webhook_secret"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (user, secret)
}

/// Types `text` in `channel` as `by`.
async fn type_in(s: &TestServer, by: &TestUser, channel: i64, text: &str) -> common::Resp {
    s.post(
        &format!("/api/v1/channels/{channel}/messages"),
        &by.token,
        json!({ "text": text }),
    )
    .await
}

/// Runs a command that must succeed; returns its `CommandResult`, checked against the
/// `command.result` the author's connection got.
async fn run_ok(
    s: &TestServer,
    by: &TestUser,
    ws: &mut WsClient,
    channel: i64,
    text: &str,
) -> Value {
    let result = type_in(s, by, channel, text)
        .await
        .expect_status(StatusCode::OK)
        .body;
    assert_eq!(result["ok"], true, "{result}");
    let event = ws.expect_event("command.result").await;
    assert_eq!(event["data"], result);
    assert_eq!(event["scope"], format!("user:{}", by.id));
    result
}

/// Each of `refusals` (a text, and what its `404`'s message says) typed by `by` is
/// refused as a command that no longer reaches anyone.
async fn refused_as_gone(
    s: &TestServer,
    by: &TestUser,
    ws: &mut WsClient,
    channel: i64,
    refusals: &[(&str, &str)],
) {
    for (text, why) in refusals {
        let refused =
            run_refused(s, by, ws, channel, text, StatusCode::NOT_FOUND, "not_found").await;
        assert!(refused.to_string().contains(why), "{text}: {refused}");
    }
}

/// Runs a command that must be refused with `status` and `code`, which the author's
/// connection hears too.
async fn run_refused(
    s: &TestServer,
    by: &TestUser,
    ws: &mut WsClient,
    channel: i64,
    text: &str,
    status: StatusCode,
    code: &str,
) -> Value {
    let resp = type_in(s, by, channel, text)
        .await
        .expect_error(status, code);
    let event = ws.expect_event("command.result").await;
    assert_eq!(event["data"]["ok"], false);
    assert_eq!(event["data"]["code"], code, "{event}");
    resp.body
}

#[tokio::test]
async fn built_ins_act_with_their_routes_rules_and_answer_only_their_author() {
    let s = TestServer::start().await;
    let w = s.world().await; // alice owns; bob and carol are members
    let erin = s.create_user("erin").await;
    let dave = s.create_user("dave").await;
    for user in [&erin, &dave] {
        s.add_member(&w.alice, w.ws, user, "member").await;
    }
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob, &w.carol])
        .await;
    let mut alice = s.connect(&w.alice.token).await;
    let mut bob = s.connect(&w.bob.token).await;

    // /topic: the channel's manager sets it; members see `channel.updated`, and only
    // alice hears the answer.
    let result = run_ok(&s, &w.alice, &mut alice, ch, "/topic  Ship week ").await;
    assert_eq!(result["command"], "topic");
    assert_eq!(result["channel_id"], ch);
    let updated = bob.expect_event("channel.updated").await;
    assert_eq!(updated["data"]["topic"], "Ship week");
    // Barrier: a later message; bob must get it with no `command.result` before it.
    let marker = s.send(&w.alice, ch, "marker").await;
    loop {
        let frame = bob.recv_json().await;
        assert_ne!(frame["type"], "command.result", "bob heard alice's answer");
        if frame["type"] == "message.created" && frame["data"]["id"] == marker["id"] {
            break;
        }
    }

    // Refused exactly as `PATCH /channels/{id}` refuses: carol is a member who does
    // not manage the channel; erin is not even a member.
    let mut carol = s.connect(&w.carol.token).await;
    let route = s
        .patch(
            &format!("/api/v1/channels/{ch}"),
            &w.carol.token,
            json!({"topic": "mine"}),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let refused = run_refused(
        &s,
        &w.carol,
        &mut carol,
        ch,
        "/topic mine",
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_eq!(refused, route.body);
    let mut erin_ws = s.connect(&erin.token).await;
    run_refused(
        &s,
        &erin,
        &mut erin_ws,
        ch,
        "/topic outsider's",
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let channel = s
        .get(&format!("/api/v1/channels/{ch}"), &w.alice.token)
        .await;
    assert_eq!(channel.body["topic"], "Ship week");

    // /policy: a valid name sets it; another is a bad request naming the choices.
    let result = run_ok(&s, &w.alice, &mut alice, ch, "/policy round_robin").await;
    assert_eq!(result["text"], "policy set to round_robin");
    let channel = s
        .get(&format!("/api/v1/channels/{ch}"), &w.alice.token)
        .await;
    assert_eq!(channel.body["policy"], "round_robin");
    let body = run_refused(
        &s,
        &w.alice,
        &mut alice,
        ch,
        "/policy loud",
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("on_duty"),
        "{body}"
    );

    // /me: an action message, posted for everyone.
    let result = run_ok(&s, &w.bob, &mut bob, ch, "/me waves").await;
    assert_eq!(result["message"]["kind"], "action");
    assert_eq!(result["message"]["text"], "waves");
    let posted = alice.expect_event("message.created").await;
    assert_eq!(posted["data"]["kind"], "action");
    let history = s.history(&w.alice, ch, "limit=1").await;
    assert_eq!(history[0]["kind"], "action");
    assert_eq!(history[0]["text"], "waves");
    run_refused(
        &s,
        &w.bob,
        &mut bob,
        ch,
        "/me",
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;

    // /invite: a member of a public channel may bring a workspace member in.
    run_ok(&s, &w.bob, &mut bob, ch, "/invite @dave").await;
    let channel = s
        .get(&format!("/api/v1/channels/{ch}"), &w.alice.token)
        .await;
    assert!(
        channel.body["member_ids"]
            .as_array()
            .unwrap()
            .contains(&json!(dave.id))
    );
    run_refused(
        &s,
        &w.bob,
        &mut bob,
        ch,
        "/invite @nobody-here",
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;

    // /leave.
    let mut dave_ws = s.connect(&dave.token).await;
    run_ok(&s, &dave, &mut dave_ws, ch, "/leave").await;
    let channel = s
        .get(&format!("/api/v1/channels/{ch}"), &w.alice.token)
        .await;
    assert!(
        !channel.body["member_ids"]
            .as_array()
            .unwrap()
            .contains(&json!(dave.id))
    );

    // `//` posts one leading slash; what is not `/name` is plain text.
    let literal = type_in(&s, &w.alice, ch, "//topic is a command")
        .await
        .expect_status(StatusCode::CREATED);
    assert_eq!(literal.body["text"], "/topic is a command");
    assert!(literal.body.get("kind").is_none());
    let path = type_in(&s, &w.alice, ch, "/tmp/x is full")
        .await
        .expect_status(StatusCode::CREATED);
    assert_eq!(path.body["text"], "/tmp/x is full");

    // An unknown command: a clear, precise refusal, and nothing posted.
    let before = s.history(&w.alice, ch, "limit=1").await;
    let body = run_refused(
        &s,
        &w.alice,
        &mut alice,
        ch,
        "/nope now",
        StatusCode::BAD_REQUEST,
        "unknown_command",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/nope is not a command"),
        "{body}"
    );
    assert_eq!(s.history(&w.alice, ch, "limit=1").await, before);
}

#[tokio::test]
async fn invite_answers_a_name_outside_the_workspace_as_one_nobody_has() {
    let s = TestServer::start().await;
    let w = s.world().await;
    // hidden-person shares no workspace with anyone here.
    let hidden = s.create_user("hidden-person").await;
    s.create_workspace(&hidden, "elsewhere").await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob])
        .await;
    let mut bob = s.connect(&w.bob.token).await;

    // The route answers an id outside the workspace as it answers one nobody has.
    let members = format!("/api/v1/channels/{ch}/members");
    for user_id in [hidden.id, 999_999] {
        s.post(&members, &w.bob.token, json!({ "user_id": user_id }))
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    // So does /invite a name: the same status and words, and no id.
    let outside = run_refused(
        &s,
        &w.bob,
        &mut bob,
        ch,
        "/invite @hidden-person",
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    let nobody = run_refused(
        &s,
        &w.bob,
        &mut bob,
        ch,
        "/invite @nobody-here",
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    let message = |body: &Value| body["error"]["message"].as_str().unwrap().to_owned();
    assert_eq!(
        message(&outside).replace("@hidden-person", "@nobody-here"),
        message(&nobody)
    );
    assert!(
        !message(&outside).contains(&hidden.id.to_string()),
        "{outside}"
    );
    // Someone outside the workspace learns nothing of the name either: the channel is
    // not found, as by the route.
    let mut hidden_ws = s.connect(&hidden.token).await;
    for name in ["bob", "nobody-here"] {
        run_refused(
            &s,
            &hidden,
            &mut hidden_ws,
            ch,
            &format!("/invite @{name}"),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
}

#[tokio::test]
async fn a_registered_command_is_run_only_in_a_thread_a_send_could_go_to() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let (bot, _) = create_agent(&s, "deploy-bot", None).await;
    s.add_member(&w.alice, w.ws, &bot, "member").await;
    s.post(
        &format!("/api/v1/workspaces/{}/commands", w.ws),
        &w.alice.token,
        json!({"name": "deploy", "target_user_id": bot.id}),
    )
    .await
    .expect_status(StatusCode::CREATED);
    let ch = s
        .create_channel(&w.alice, w.ws, "ops", "public", &[&w.bob])
        .await;
    let secret = s
        .create_channel(&w.alice, w.ws, "secret", "private", &[&w.carol])
        .await;
    let dora = s.create_user("dora").await;
    let elsewhere = s.create_workspace(&dora, "elsewhere").await;
    let far = s
        .create_channel(&dora, elsewhere, "far", "public", &[])
        .await;
    let messages = format!("/api/v1/channels/{ch}/messages");
    let root = s.send(&w.alice, ch, "root").await["id"].clone();
    let reply = s
        .post(
            &messages,
            &w.alice.token,
            json!({"text": "a reply", "thread_id": root}),
        )
        .await
        .expect_status(StatusCode::CREATED)
        .body["id"]
        .clone();
    let private_root = s.send(&w.carol, secret, "hush").await["id"].clone();
    let foreign_root = s.send(&dora, far, "far away").await["id"].clone();
    let mut bot_ws = s.connect(&bot.token).await;
    let mut bob_ws = s.connect(&w.bob.token).await;

    // A reply, a message of a channel bob cannot read, another workspace's, none:
    // the command is refused exactly as a plain send there is.
    for thread_id in [reply, private_root, foreign_root, json!(999_999)] {
        let sent = s
            .post(
                &messages,
                &w.bob.token,
                json!({"text": "hello", "thread_id": thread_id}),
            )
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
        let run = s
            .post(
                &messages,
                &w.bob.token,
                json!({"text": "/deploy hello", "thread_id": thread_id}),
            )
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
        assert_eq!(run.body, sent.body, "thread_id {thread_id}");
        let result = bob_ws.expect_event("command.result").await;
        assert_eq!(result["data"]["ok"], false, "{result}");
    }
    // In a thread of the channel it runs there; the first the bot hears is that.
    s.post(
        &messages,
        &w.bob.token,
        json!({"text": "/deploy hello", "thread_id": root}),
    )
    .await
    .expect_status(StatusCode::OK);
    let invoked = bot_ws.expect_event("command.invoked").await;
    assert_eq!(invoked["data"]["thread_id"], root, "{invoked}");
}

#[tokio::test]
async fn a_registered_command_wakes_its_agent_on_its_socket_and_posts_nothing() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let (bot, _) = create_agent(&s, "deploy-bot", None).await;
    let (other, _) = create_agent(&s, "other-bot", None).await;
    for agent in [&bot, &other] {
        s.add_member(&w.alice, w.ws, agent, "member").await;
    }
    let ch = s
        .create_channel(&w.alice, w.ws, "ops", "public", &[&w.bob])
        .await;
    let commands = format!("/api/v1/workspaces/{}/commands", w.ws);

    // Who may register: owners and admins (for an agent of the workspace); an agent
    // for itself; not members, not an agent for another.
    let made = s
        .post(
            &commands,
            &w.alice.token,
            json!({"name": "deploy", "description": "ship a build", "target_user_id": bot.id}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    assert_eq!(made.body["name"], "deploy");
    assert!(made.body.get("webhook_secret").is_none());
    s.post(
        &commands,
        &w.bob.token,
        json!({"name": "mine", "target_user_id": bot.id}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.post(
        &commands,
        &other.token,
        json!({"name": "steal", "target_user_id": bot.id}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.post(
        &commands,
        &other.token,
        json!({"name": "ask", "description": "ask other-bot", "target_user_id": other.id}),
    )
    .await
    .expect_status(StatusCode::CREATED);
    s.post(
        &commands,
        &w.alice.token,
        json!({"name": "deploy", "target_user_id": other.id}),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "conflict");
    s.post(
        &commands,
        &w.alice.token,
        json!({"name": "topic", "target_user_id": bot.id}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    s.post(
        &commands,
        &w.alice.token,
        json!({"name": "x", "target_user_id": w.bob.id}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    s.post(&commands, &w.alice.token, json!({"name": "both"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    let listed = s
        .get(&commands, &w.carol.token)
        .await
        .expect_status(StatusCode::OK);
    let names: Vec<&str> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ask", "deploy"]);

    // bob types it: the bot is woken on its socket; nothing is posted.
    let mut bot_ws = s.connect(&bot.token).await;
    let mut bob_ws = s.connect(&w.bob.token).await;
    let before = s.history(&w.alice, ch, "limit=5").await;
    let result = run_ok(&s, &w.bob, &mut bob_ws, ch, "/deploy prod  now").await;
    assert_eq!(result["text"], "/deploy sent to @deploy-bot");
    let invoked = bot_ws.expect_event("command.invoked").await;
    assert_eq!(invoked["wake"], true, "{invoked}");
    let data = &invoked["data"];
    assert_eq!(data["command"], "deploy");
    assert_eq!(data["args"], "prod  now");
    assert_eq!(data["channel_id"], ch);
    assert_eq!(data["user_id"], w.bob.id);
    assert_eq!(data["workspace_id"], w.ws);
    assert!(data["id"].as_str().unwrap().starts_with("command.invoked:"));
    assert_eq!(s.history(&w.alice, ch, "limit=5").await, before);

    // An agent removed from the workspace keeps its registered command, but is no
    // longer reached: typed in a private channel, `/ask` is refused as for a
    // deactivated agent, and nothing reaches the agent's scope (live or logged).
    let secret = s
        .create_channel(&w.alice, w.ws, "secret", "private", &[&w.bob])
        .await;
    s.delete(
        &format!("/api/v1/workspaces/{}/members/{}", w.ws, other.id),
        &w.alice.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    let mut other_ws = s.connect(&other.token).await;
    let head = other_ws.hello["offsets"][format!("user:{}", other.id)]
        .as_u64()
        .unwrap();
    let refused = run_refused(
        &s,
        &w.bob,
        &mut bob_ws,
        secret,
        "/ask the merger closes friday",
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert!(
        refused.to_string().contains("no longer a member"),
        "{refused}"
    );
    let live = other_ws.barrier().await;
    assert!(
        live.iter().all(|f| f["type"] != "command.invoked"),
        "{live:?}"
    );
    let logged = s
        .get(
            &format!("/api/v1/scopes/user%3A{}/events?after={head}", other.id),
            &other.token,
        )
        .await
        .expect_status(StatusCode::OK)
        .body;
    assert!(
        logged["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] != "command.invoked"),
        "{logged}"
    );

    // Only its registrant or a manager removes it; then it is unknown.
    let id = made.body["id"].as_i64().unwrap();
    s.delete(&format!("{commands}/{id}"), &w.bob.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.delete(&format!("{commands}/{id}"), &w.alice.token)
        .await
        .expect_status(StatusCode::NO_CONTENT);
    run_refused(
        &s,
        &w.bob,
        &mut bob_ws,
        ch,
        "/deploy prod",
        StatusCode::BAD_REQUEST,
        "unknown_command",
    )
    .await;
}

/// The names `GET …/commands` lists, as `by` sees them.
async fn listed(s: &TestServer, ws: i64, by: &TestUser) -> Vec<String> {
    let listed = s
        .get(&format!("/api/v1/workspaces/{ws}/commands"), &by.token)
        .await
        .expect_status(StatusCode::OK);
    let commands = listed.body.as_array().unwrap().iter();
    commands
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

/// `POST /api/v1/users/{id}/deactivate` (or `…/reactivate`) with the admin token.
async fn set_active(s: &TestServer, user: &TestUser, active: bool) {
    let verb = if active { "reactivate" } else { "deactivate" };
    s.post(
        &format!("/api/v1/users/{}/{verb}", user.id),
        ADMIN_TOKEN,
        json!({}),
    )
    .await
    .expect_status(StatusCode::OK);
}

#[tokio::test]
async fn the_listing_holds_only_commands_whose_agent_can_be_reached() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "ops", "public", &[&w.bob])
        .await;
    let commands = format!("/api/v1/workspaces/{}/commands", w.ws);
    let mut bots = Vec::new();
    for name in ["away", "asleep", "here"] {
        let (bot, _) = create_agent(&s, &format!("{name}-bot"), None).await;
        s.add_member(&w.alice, w.ws, &bot, "member").await;
        s.post(
            &commands,
            &w.alice.token,
            json!({"name": name, "target_user_id": bot.id}),
        )
        .await
        .expect_status(StatusCode::CREATED);
        bots.push(bot);
    }
    let [away, asleep, _] = &bots[..] else {
        unreachable!()
    };
    assert_eq!(listed(&s, w.ws, &w.carol).await, ["asleep", "away", "here"]);

    // One agent removed from the workspace, one deactivated: their commands are no
    // longer listed, as typing them is refused.
    s.delete(
        &format!("/api/v1/workspaces/{}/members/{}", w.ws, away.id),
        &w.alice.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    set_active(&s, asleep, false).await;
    assert_eq!(listed(&s, w.ws, &w.carol).await, ["here"]);
    assert_eq!(listed(&s, w.ws, &w.alice).await, ["here"]);
    let mut bob_ws = s.connect(&w.bob.token).await;
    refused_as_gone(
        &s,
        &w.bob,
        &mut bob_ws,
        ch,
        &[
            ("/away now", "no longer a member"),
            ("/asleep now", "no longer active"),
        ],
    )
    .await;
    run_ok(&s, &w.bob, &mut bob_ws, ch, "/here now").await;

    // Back in the workspace, active again: listed and reached again.
    s.add_member(&w.alice, w.ws, away, "member").await;
    set_active(&s, asleep, true).await;
    assert_eq!(listed(&s, w.ws, &w.carol).await, ["asleep", "away", "here"]);
    run_ok(&s, &w.bob, &mut bob_ws, ch, "/away now").await;
    run_ok(&s, &w.bob, &mut bob_ws, ch, "/asleep now").await;
}

/// A command that can no longer run is listed nowhere, so nobody could find its id to
/// remove it: registering its name again replaces it, rather than `409` for good.
#[tokio::test]
async fn a_command_that_cannot_run_gives_its_name_up() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "ops", "public", &[&w.bob])
        .await;
    let commands = format!("/api/v1/workspaces/{}/commands", w.ws);
    let (old, _) = create_agent(&s, "old-bot", None).await;
    let (new, _) = create_agent(&s, "new-bot", None).await;
    for bot in [&old, &new] {
        s.add_member(&w.alice, w.ws, bot, "member").await;
    }
    let register = |bot: &TestUser| {
        s.post(
            &commands,
            &w.alice.token,
            json!({"name": "deploy", "target_user_id": bot.id}),
        )
    };
    register(&old).await.expect_status(StatusCode::CREATED);
    // While it runs, the name is taken.
    register(&new)
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");
    s.delete(
        &format!("/api/v1/workspaces/{}/members/{}", w.ws, old.id),
        &w.alice.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    assert!(listed(&s, w.ws, &w.alice).await.is_empty());
    // Gone from the listing, and its name free again.
    let made = register(&new).await.expect_status(StatusCode::CREATED);
    assert_eq!(made.body["target_user_id"], new.id, "{}", made.text);
    assert_eq!(listed(&s, w.ws, &w.carol).await, ["deploy"]);
    let mut new_ws = s.connect(&new.token).await;
    let mut bob_ws = s.connect(&w.bob.token).await;
    run_ok(&s, &w.bob, &mut bob_ws, ch, "/deploy now").await;
    let invoked = new_ws.expect_event("command.invoked").await;
    assert_eq!(invoked["data"]["args"], "now", "{invoked}");
    // The old agent back in the workspace finds its command replaced.
    s.add_member(&w.alice, w.ws, &old, "member").await;
    assert_eq!(listed(&s, w.ws, &w.carol).await, ["deploy"]);
}

/// One request a receiver got: its headers and raw body.
struct Hit {
    path: String,
    headers: HeaderMap,
    body: String,
}

/// A local webhook receiver answering 200 to every POST, handing each to the test.
async fn receiver() -> (SocketAddr, mpsc::UnboundedReceiver<Hit>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/{*path}",
        axum::routing::post(
            move |uri: axum::http::Uri, headers: HeaderMap, body: String| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(Hit {
                        path: uri.path().to_owned(),
                        headers,
                        body,
                    });
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

async fn next_hit(rx: &mut mpsc::UnboundedReceiver<Hit>) -> Hit {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no webhook request in time")
        .unwrap()
}

/// The receiver's check: HMAC-SHA256 over `"{Chorus-Timestamp}.{body}"`.
fn signed_by(secret: &str, hit: &Hit) -> bool {
    let header = |h: &str| hit.headers.get(h).unwrap().to_str().unwrap().to_owned();
    let sig = header("chorus-signature");
    let Some(sig) = sig.strip_prefix("sha256=") else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{}.{}", header("chorus-timestamp"), hit.body).as_bytes());
    mac.verify_slice(&hex::decode(sig).unwrap()).is_ok()
}

#[tokio::test]
async fn a_registered_command_reaches_its_webhook_signed() {
    let (addr, mut hits) = receiver().await;
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "ops", "public", &[&w.bob])
        .await;
    let commands = format!("/api/v1/workspaces/{}/commands", w.ws);
    let mut bob_ws = s.connect(&w.bob.token).await;

    // A command POSTed to its own webhook, signed with its own secret.
    let made = s
        .post(
            &commands,
            &w.alice.token,
            json!({"name": "ci", "description": "run CI", "webhook_url": format!("http://{addr}/ci")}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    let secret = made.body["webhook_secret"].as_str().unwrap().to_owned();
    let listed = s.get(&commands, &w.alice.token).await;
    assert!(
        listed.body[0].get("webhook_secret").is_none(),
        "{}",
        listed.text
    );
    assert_eq!(listed.body[0]["webhook_url"], format!("http://{addr}/ci"));
    // Its URL may carry a secret: a member who neither manages the workspace nor
    // registered it sees the command without it.
    let listed = s.get(&commands, &w.bob.token).await;
    assert_eq!(listed.body[0]["name"], "ci", "{}", listed.text);
    assert!(
        listed.body[0].get("webhook_url").is_none(),
        "{}",
        listed.text
    );
    let result = run_ok(&s, &w.bob, &mut bob_ws, ch, "/ci run all").await;
    assert_eq!(result["text"], "/ci sent to its webhook");
    let hit = next_hit(&mut hits).await;
    assert_eq!(hit.path, "/ci");
    assert!(signed_by(&secret, &hit), "bad signature");
    let body: Value = serde_json::from_str(&hit.body).unwrap();
    assert_eq!(body["type"], "command.invoked");
    assert_eq!(body["wake"], true);
    assert_eq!(body["data"]["args"], "run all");
    assert_eq!(body["data"]["user_id"], w.bob.id);
    assert_eq!(
        hit.headers
            .get("chorus-event-id")
            .unwrap()
            .to_str()
            .unwrap(),
        body["id"].as_str().unwrap()
    );

    // An agent with a webhook and no connection is woken through its webhook, signed
    // with the agent's secret.
    let (bot, bot_secret) =
        create_agent(&s, "hook-bot", Some(&format!("http://{addr}/agent"))).await;
    s.add_member(&w.alice, w.ws, &bot, "member").await;
    s.post(
        &commands,
        &w.alice.token,
        json!({"name": "ask", "target_user_id": bot.id}),
    )
    .await
    .expect_status(StatusCode::CREATED);
    run_ok(&s, &w.bob, &mut bob_ws, ch, "/ask what broke?").await;
    let hit = next_hit(&mut hits).await;
    assert_eq!(hit.path, "/agent");
    assert!(signed_by(&bot_secret, &hit), "bad signature");
    let body: Value = serde_json::from_str(&hit.body).unwrap();
    assert_eq!(body["type"], "command.invoked");
    assert_eq!(body["data"]["command"], "ask");
    assert_eq!(body["data"]["args"], "what broke?");
}

/// A `webhook_url` command acts for its registrant (its deliveries are recorded under
/// them): once they left the workspace, or were deactivated, typing it answers 404 and
/// POSTs nothing, and it is not listed. Another command's request is the next the
/// receiver gets, and nothing more was queued under the registrant.
#[tokio::test]
async fn a_webhook_command_is_not_delivered_once_its_registrant_is_gone() {
    let (addr, mut hits) = receiver().await;
    let s = TestServer::start().await;
    let w = s.world().await;
    let dana = s.create_user("dana").await;
    let erin = s.create_user("erin").await;
    for admin in [&dana, &erin] {
        s.add_member(&w.alice, w.ws, admin, "admin").await;
    }
    let ch = s
        .create_channel(&w.alice, w.ws, "ops", "public", &[&w.bob])
        .await;
    let commands = format!("/api/v1/workspaces/{}/commands", w.ws);
    for (by, name) in [(&dana, "ci"), (&erin, "cd"), (&w.alice, "ok")] {
        s.post(
            &commands,
            &by.token,
            json!({"name": name, "webhook_url": format!("http://{addr}/{name}")}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    }
    let mut bob_ws = s.connect(&w.bob.token).await;
    run_ok(&s, &w.bob, &mut bob_ws, ch, "/ci first").await;
    let hit = next_hit(&mut hits).await;
    assert_eq!(hit.path, "/ci");
    let queued = s.queued_webhooks(&dana).await;
    assert_eq!(queued.len(), 1, "{queued:?}");

    // dana leaves the workspace; erin is deactivated.
    s.delete(
        &format!("/api/v1/workspaces/{}/members/{}", w.ws, dana.id),
        &dana.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    set_active(&s, &erin, false).await;
    refused_as_gone(
        &s,
        &w.bob,
        &mut bob_ws,
        ch,
        &[
            (
                "/ci the merger closes friday",
                "registrant is no longer a member",
            ),
            (
                "/cd the merger closes friday",
                "registrant is no longer active",
            ),
        ],
    )
    .await;
    run_ok(&s, &w.bob, &mut bob_ws, ch, "/ok after").await;
    let hit = next_hit(&mut hits).await;
    assert_eq!(hit.path, "/ok", "{}", hit.body);
    assert_eq!(s.queued_webhooks(&dana).await, queued);
    let erins = s
        .get(
            &format!("/api/v1/users/{}/webhook-deliveries", erin.id),
            ADMIN_TOKEN,
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(erins.body, json!([]));
    assert_eq!(listed(&s, w.ws, &w.bob).await, ["ok"]);
}

#[tokio::test]
async fn the_rust_client_runs_commands_registers_them_and_posts_slashes_literally() {
    use chorus_client::Client;
    use chorus_client::model::{ChannelId, CreateCommand, SendMessage, UserId, WorkspaceId};
    let s = TestServer::start().await;
    let w = s.world().await;
    let (bot, _) = create_agent(&s, "sdk-bot", None).await;
    s.add_member(&w.alice, w.ws, &bot, "member").await;
    let ch = ChannelId(
        s.create_channel(&w.alice, w.ws, "sdk", "public", &[&w.bob])
            .await,
    );
    let ws = WorkspaceId(w.ws);
    let base = s.url("/");
    let alice = Client::new(&base, w.alice.token.as_str()).unwrap();

    let made = alice
        .create_command(
            ws,
            &CreateCommand {
                name: "ping".into(),
                description: "ping the bot".into(),
                target_user_id: Some(UserId(bot.id)),
                webhook_url: None,
                webhook_secret: None,
            },
        )
        .await
        .unwrap();
    let listed = alice.list_commands(ws).await.unwrap();
    assert_eq!(listed, std::slice::from_ref(&made));

    let result = alice
        .run_command(ch, "/topic from the SDK", None)
        .await
        .unwrap();
    assert!(result.ok);
    assert_eq!(result.text, "topic set to \"from the SDK\"");
    let result = alice.run_command(ch, "/ping", None).await.unwrap();
    assert_eq!(result.text, "/ping sent to @sdk-bot");
    match alice.run_command(ch, "/nope", None).await {
        Err(chorus_client::Error::Api { code, .. }) => {
            assert_eq!(code, chorus_proto::ErrorCode::UnknownCommand);
        }
        other => panic!("expected unknown_command, got {other:?}"),
    }

    // `send_message` posts what it is given, a leading slash included.
    let sent = alice
        .send_message(ch, &SendMessage::new("/topic is literal here"), None)
        .await
        .unwrap();
    assert_eq!(sent.message.text, "/topic is literal here");

    alice.delete_command(ws, made.id).await.unwrap();
    assert!(alice.list_commands(ws).await.unwrap().is_empty());
}

/// A command's text is held to a message's limits: it goes on, whole, in its event
/// (`args`) and its webhook delivery.
#[tokio::test]
async fn a_commands_text_is_held_to_a_messages_limits() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "ops", "public", &[&w.bob])
        .await;
    let (bot, _) = create_agent(&s, "deploy-bot", None).await;
    s.add_member(&w.alice, w.ws, &bot, "member").await;
    s.post(
        &format!("/api/v1/workspaces/{}/commands", w.ws),
        &w.alice.token,
        json!({"name": "deploy", "target_user_id": bot.id}),
    )
    .await
    .expect_status(StatusCode::CREATED);
    let mut bot_ws = s.connect(&bot.token).await;
    let mut bob_ws = s.connect(&w.bob.token).await;
    let long = format!("/deploy {}", "a".repeat(20_000));
    type_in(&s, &w.bob, ch, &long)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Refused as every command is: its author hears of it.
    let result = bob_ws.expect_event("command.result").await;
    assert_eq!(result["data"]["ok"], false, "{result}");
    assert_eq!(result["data"]["code"], "payload_too_large", "{result}");
    type_in(&s, &w.bob, ch, "/deploy \u{0}")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    bob_ws.expect_event("command.result").await;
    // The first invocation the agent hears of is the one within the limits.
    run_ok(&s, &w.bob, &mut bob_ws, ch, "/deploy now").await;
    let invoked = bot_ws.expect_event("command.invoked").await;
    assert_eq!(invoked["data"]["args"], "now", "{invoked}");
}

/// A workspace holds at most `MAX_COMMANDS_PER_WORKSPACE` commands (any agent may
/// register its own, and every member lists them all); deleting one makes room.
#[tokio::test]
async fn a_workspace_holds_a_bounded_number_of_commands() {
    let s = TestServer::start_with(|c| c.http_per_sec = 0).await;
    let w = s.world().await;
    let commands = format!("/api/v1/workspaces/{}/commands", w.ws);
    let register = |name: String| {
        s.post(
            &commands,
            &w.alice.token,
            json!({"name": name, "webhook_url": "http://127.0.0.1:9/hook"}),
        )
    };
    let cap = chorus_chat::store::MAX_COMMANDS_PER_WORKSPACE;
    let mut first = None;
    for n in 0..cap {
        let made = register(format!("c{n}"))
            .await
            .expect_status(StatusCode::CREATED);
        first.get_or_insert(made.body["id"].as_i64().unwrap());
    }
    register("one-more".into())
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");
    s.delete(&format!("{commands}/{}", first.unwrap()), &w.alice.token)
        .await
        .expect_status(StatusCode::NO_CONTENT);
    register("one-more".into())
        .await
        .expect_status(StatusCode::CREATED);
}

/// Two agents in `w`'s workspace: `caller-bot`, in a public channel `bots` with bob whose
/// loop guard holds after `run` agent messages, and `pinged-bot`, for which alice
/// registers `/ping`. Returns both and the channel's id.
async fn loop_guarded(s: &TestServer, w: &World, run: u32) -> (TestUser, TestUser, i64) {
    let (caller, _) = create_agent(s, "caller-bot", None).await;
    let (pinged, _) = create_agent(s, "pinged-bot", None).await;
    for bot in [&caller, &pinged] {
        s.add_member(&w.alice, w.ws, bot, "member").await;
    }
    let ch = s
        .post(
            &format!("/api/v1/workspaces/{}/channels", w.ws),
            &w.alice.token,
            json!({"name": "bots", "kind": "public", "member_ids": [w.bob.id, caller.id],
                   "loop_guard_run": run}),
        )
        .await
        .expect_status(StatusCode::CREATED)
        .body["id"]
        .as_i64()
        .unwrap();
    s.post(
        &format!("/api/v1/workspaces/{}/commands", w.ws),
        &w.alice.token,
        json!({"name": "ping", "target_user_id": pinged.id}),
    )
    .await
    .expect_status(StatusCode::CREATED);
    (caller, pinged, ch)
}

/// A command is a message to its agent for the channel's loop guard: agents invoking
/// commands at each other hold the channel as their messages would, and while it is
/// held a command wakes nobody (its agent observes it); a person's command releases it.
#[tokio::test]
async fn commands_count_for_the_loop_guard() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let (caller, pinged, ch) = loop_guarded(&s, &w, 2).await;
    let mut pinged_ws = s.connect(&pinged.token).await;
    let mut bob_ws = s.connect(&w.bob.token).await;
    let mut wakes = Vec::new();
    for by in [&caller, &caller, &w.bob] {
        type_in(&s, by, ch, "/ping")
            .await
            .expect_status(StatusCode::OK);
        let invoked = pinged_ws.expect_event("command.invoked").await;
        wakes.push(invoked["wake"].clone());
    }
    assert_eq!(wakes, [json!(true), json!(false), json!(true)]);
    let held = bob_ws.expect_event("channel.loop_guard").await;
    assert_eq!(held["data"]["state"], "held", "{held}");
    let released = bob_ws.expect_event("channel.loop_guard").await;
    assert_eq!(released["data"]["state"], "released", "{released}");
}

/// An agent's command counts for the loop guard even when it is refused (its agent gone):
/// the hold it brings is recorded and announced, not left in one node's memory.
#[tokio::test]
async fn a_refused_command_that_holds_the_channel_still_announces_it() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let (caller, gone, ch) = loop_guarded(&s, &w, 1).await;
    s.delete(
        &format!("/api/v1/workspaces/{}/members/{}", w.ws, gone.id),
        &w.alice.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    let mut bob_ws = s.connect(&w.bob.token).await;
    type_in(&s, &caller, ch, "/ping")
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let held = bob_ws.expect_event("channel.loop_guard").await;
    assert_eq!(held["data"]["state"], "held", "{held}");
    let channel = s
        .get(&format!("/api/v1/channels/{ch}"), &w.bob.token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(
        channel.body["loop_guard"]["state"], "held",
        "{}",
        channel.text
    );
}

/// Types `text` in `channel` as `by`, with an `Idempotency-Key`.
async fn type_keyed(
    s: &TestServer,
    by: &TestUser,
    channel: i64,
    text: &str,
    key: &str,
) -> common::Resp {
    let resp = s
        .http
        .post(s.url(&format!("/api/v1/channels/{channel}/messages")))
        .bearer_auth(&by.token)
        .header("idempotency-key", key)
        .json(&json!({ "text": text }))
        .send()
        .await
        .unwrap();
    common::Resp::read(resp).await
}

fn replayed(resp: &common::Resp) -> bool {
    resp.headers
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

/// A command's `Idempotency-Key` is kept for a day (`COMMAND_KEYS_KEPT`): a retry
/// within it is answered as the first time, the keys' trim notwithstanding; once the
/// server's clock is past the day and the trim has run, the retry runs the command anew.
#[tokio::test]
async fn a_commands_idempotency_key_is_forgotten_after_a_day() {
    use chorus_server::Clock;
    // Where the test clock starts: 2023-11-14T22:13:20Z.
    const EPOCH: i64 = 1_700_000_000_000;
    let day = i64::try_from(chorus_chat::service::COMMAND_KEYS_KEPT.as_millis()).unwrap();
    let mut s = TestServer::start_with(|c| c.clock = Clock::following_tokio(EPOCH)).await;
    let w = s.world().await;
    let (bot, _) = create_agent(&s, "deploy-bot", None).await;
    s.add_member(&w.alice, w.ws, &bot, "member").await;
    let ch = s
        .create_channel(&w.alice, w.ws, "ops", "public", &[&w.bob])
        .await;
    s.post(
        &format!("/api/v1/workspaces/{}/commands", w.ws),
        &w.alice.token,
        json!({"name": "deploy", "target_user_id": bot.id}),
    )
    .await
    .expect_status(StatusCode::CREATED);
    let first = type_keyed(&s, &w.bob, ch, "/deploy prod", "deploy-1")
        .await
        .expect_status(StatusCode::OK);
    assert!(!replayed(&first));

    // A minute short of the day: trimmed, and still answered as the first time.
    s.restart_with(|c| c.clock = Clock::following_tokio(EPOCH + day - 60_000))
        .await;
    s.state().chat.forget_command_keys().await.unwrap();
    let again = type_keyed(&s, &w.bob, ch, "/deploy prod", "deploy-1")
        .await
        .expect_status(StatusCode::OK);
    assert!(replayed(&again), "{:?}", again.headers);
    assert_eq!(again.body, first.body);

    // A minute past it: forgotten, the retry runs.
    s.restart_with(|c| c.clock = Clock::following_tokio(EPOCH + day + 60_000))
        .await;
    let mut bot_ws = s.connect(&bot.token).await;
    s.state().chat.forget_command_keys().await.unwrap();
    let ran = type_keyed(&s, &w.bob, ch, "/deploy prod", "deploy-1")
        .await
        .expect_status(StatusCode::OK);
    assert!(!replayed(&ran), "{:?}", ran.headers);
    let invoked = bot_ws.expect_event("command.invoked").await;
    assert_eq!(invoked["data"]["args"], "prod", "{invoked}");
    // Remembered again, from now.
    let again = type_keyed(&s, &w.bob, ch, "/deploy prod", "deploy-1")
        .await
        .expect_status(StatusCode::OK);
    assert!(replayed(&again), "{:?}", again.headers);
}

#[tokio::test]
async fn a_command_retried_with_its_idempotency_key_runs_once() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let (bot, _) = create_agent(&s, "deploy-bot", None).await;
    s.add_member(&w.alice, w.ws, &bot, "member").await;
    let ch = s
        .create_channel(&w.alice, w.ws, "ops", "public", &[&w.bob])
        .await;
    let other = s
        .create_channel(&w.alice, w.ws, "other", "public", &[&w.bob])
        .await;
    let commands = format!("/api/v1/workspaces/{}/commands", w.ws);
    let made = s
        .post(
            &commands,
            &w.alice.token,
            json!({"name": "deploy", "target_user_id": bot.id}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    let mut bot_ws = s.connect(&bot.token).await;
    let mut bob_ws = s.connect(&w.bob.token).await;
    let bot_scope = format!("user:{}", bot.id);
    let head = bot_ws.hello["offsets"][&bot_scope].as_u64().unwrap();

    // The first send runs it; the retry is answered the same, and delivers nothing.
    let first = type_keyed(&s, &w.bob, ch, "/deploy prod", "deploy-1")
        .await
        .expect_status(StatusCode::OK);
    assert!(!replayed(&first));
    assert_eq!(first.body["text"], "/deploy sent to @deploy-bot");
    bob_ws.expect_event("command.result").await;
    bot_ws.expect_event("command.invoked").await;
    let again = type_keyed(&s, &w.bob, ch, "/deploy prod", "deploy-1")
        .await
        .expect_status(StatusCode::OK);
    assert!(replayed(&again), "{:?}", again.headers);
    assert_eq!(again.body, first.body);
    let invoked = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["type"] == "command.invoked")
            .count()
    };
    assert_eq!(invoked(&bot_ws.barrier().await), 0);
    assert_eq!(invoked(&s.logged_after(&bot, &bot_scope, head).await), 1);
    let told = bob_ws.barrier().await;
    assert!(
        told.iter().all(|e| e["type"] != "command.result"),
        "{told:?}"
    );

    // The key is the sender's, in one channel; a bad key is refused before running.
    type_keyed(&s, &w.bob, other, "/deploy prod", "deploy-1")
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");
    bob_ws.expect_event("command.result").await;
    type_keyed(&s, &w.bob, ch, "/deploy prod", &"k".repeat(256))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    let by_alice = type_keyed(&s, &w.alice, ch, "/deploy prod", "deploy-1")
        .await
        .expect_status(StatusCode::OK);
    assert!(!replayed(&by_alice));
    bot_ws.expect_event("command.invoked").await;

    // A refused invocation keeps no key: retried once it can run, it runs.
    s.delete(
        &format!("/api/v1/workspaces/{}/members/{}", w.ws, bot.id),
        &w.alice.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    type_keyed(&s, &w.bob, ch, "/deploy staging", "deploy-2")
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    s.add_member(&w.alice, w.ws, &bot, "member").await;
    let mut bot_ws = s.connect(&bot.token).await;
    let ran = type_keyed(&s, &w.bob, ch, "/deploy staging", "deploy-2")
        .await
        .expect_status(StatusCode::OK);
    assert!(!replayed(&ran));
    let invoked = bot_ws.expect_event("command.invoked").await;
    assert_eq!(invoked["data"]["args"], "staging");
    // Answered as the first time whatever became of the command since.
    let id = made.body["id"].as_i64().unwrap();
    s.delete(&format!("{commands}/{id}"), &w.alice.token)
        .await
        .expect_status(StatusCode::NO_CONTENT);
    let again = type_keyed(&s, &w.bob, ch, "/deploy staging", "deploy-2")
        .await
        .expect_status(StatusCode::OK);
    assert!(replayed(&again));
    assert_eq!(again.body["text"], ran.body["text"]);

    // `/me` posts once too.
    for _ in 0..2 {
        type_keyed(&s, &w.bob, ch, "/me waves", "wave-1")
            .await
            .expect_status(StatusCode::OK);
    }
    let waves = s.history(&w.alice, ch, "limit=10").await;
    assert_eq!(
        waves.iter().filter(|m| m["text"] == "waves").count(),
        1,
        "{waves:?}"
    );
}
