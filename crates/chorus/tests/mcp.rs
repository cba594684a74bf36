//! Chorus as an MCP server, driven by a real MCP client from a public SDK (the Python
//! `mcp` package, `tests/mcp/bridge.py`) over both transports — `chorus mcp` on stdio and
//! the server's `/mcp` (Streamable HTTP) — against the real binary on a free port.
//!
//! The client is found at `CHORUS_MCP_PYTHON` (`scripts/test` installs it in a venv), else
//! `python3`. Without an interpreter that imports `mcp`, the MCP client tests are reported
//! ignored, unless `CHORUS_REQUIRE_SERVICES=1` (CI), which makes that a failure. Its own
//! `main` (libtest-mimic): whether they can run is known only at start.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_client::{
    ChannelId, ChannelKind, Client, CreateChannel, CreateToken, CreateUser, EventFrame, Policy,
    Realtime, SendMessage, UserId, UserWithToken, WorkspaceId,
};
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

mod common;
use common::free_addr;

const ADMIN: &str = "mcp-admin";
/// Bound of every wait: turns a hang into a failure.
const WAIT: Duration = Duration::from_secs(20);
/// "Within 100 ms of a wake", with slack for a loaded CI machine; the measured figure is
/// printed (docs/benchmarks.md).
const WAKE_BOUND_MS: f64 = 1_000.0;

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let python = mcp_python();
    let skip = python.is_none();
    if skip {
        assert!(
            std::env::var("CHORUS_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "the MCP client tests need Python with the `mcp` package \
             (CHORUS_MCP_PYTHON; scripts/test installs it), and CHORUS_REQUIRE_SERVICES=1"
        );
        eprintln!("MCP client tests ignored: no Python with the `mcp` package (run scripts/test)");
    }
    let python = python.unwrap_or_default();
    let stdio = python.clone();
    let example = python.clone();
    let (notify_stdio, notify_http) = (python.clone(), python.clone());
    let (passed_stdio, passed_http) = (python.clone(), python.clone());
    let trials = vec![
        Trial::test("stdio_transport_tools_waits_and_errors", move || {
            run(scenario(Transport::Stdio, stdio))
        })
        .with_ignored_flag(skip),
        Trial::test("http_transport_tools_waits_and_errors", move || {
            run(scenario(Transport::Http, python))
        })
        .with_ignored_flag(skip),
        Trial::test("stdio_transport_notifies_wakes_to_subscribers", move || {
            run(wake_notifications(Transport::Stdio, notify_stdio))
        })
        .with_ignored_flag(skip),
        Trial::test("http_transport_notifies_wakes_to_subscribers", move || {
            run(wake_notifications(Transport::Http, notify_http))
        })
        .with_ignored_flag(skip),
        Trial::test(
            "stdio_transport_wakes_on_a_turn_passed_to_the_agent_and_on_its_cancel",
            {
                let python = passed_stdio;
                move || run(turn_passed_wakes(Transport::Stdio, python))
            },
        )
        .with_ignored_flag(skip),
        Trial::test(
            "http_transport_wakes_on_a_turn_passed_to_the_agent_and_on_its_cancel",
            {
                let python = passed_http;
                move || run(turn_passed_wakes(Transport::Http, python))
            },
        )
        .with_ignored_flag(skip),
        Trial::test(
            "example_agent_answers_a_mention_over_both_transports",
            move || run(example_agent_answers_a_mention(example)),
        )
        .with_ignored_flag(skip),
        Trial::test("http_endpoint_is_authenticated_like_the_api", || {
            run(http_endpoint_is_authenticated_like_the_api())
        }),
        Trial::test("http_sessions_are_bounded_per_user", || {
            run(http_sessions_are_bounded_per_user())
        }),
        Trial::test("http_session_is_only_its_openers", || {
            run(http_session_is_only_its_openers())
        }),
    ];
    libtest_mimic::run(&args, trials).exit_code()
}

/// Runs a test on a runtime of its own (a panic fails the test).
fn run(test: impl Future<Output = ()>) -> Result<(), Failed> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
    Ok(())
}

/// A Python interpreter that can import the MCP client, if there is one.
fn mcp_python() -> Option<String> {
    let python = std::env::var("CHORUS_MCP_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let ok = std::process::Command::new(&python)
        .args([
            "-c",
            "import httpx2, mcp.client.streamable_http, mcp.client.stdio",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(python)
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    Stdio,
    Http,
}

/// The Python MCP client, one call at a time.
struct Bridge {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    /// Notifications of an open listen stream, in arrival order, not yet taken.
    notifications: std::collections::VecDeque<Value>,
}

/// What a tool call answered.
#[derive(Debug)]
struct Outcome {
    is_error: bool,
    result: Value,
    text: String,
    elapsed_ms: f64,
    done_ms: f64,
}

impl Outcome {
    /// The error code of a tool error (`{"error":{"code",…}}`), or the text of one the SDK made.
    fn error_code(&self) -> String {
        assert!(self.is_error, "expected an error, got {:?}", self.result);
        serde_json::from_str::<Value>(&self.text)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_else(|| self.text.clone())
    }

    #[track_caller]
    fn ok(self) -> Value {
        assert!(!self.is_error, "tool failed: {}", self.text);
        self.result
    }
}

impl Bridge {
    async fn start(transport: Transport, python: &str, addr: SocketAddr, token: &str) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/bridge.py");
        let mut cmd = tokio::process::Command::new(python);
        cmd.arg(script);
        match transport {
            Transport::Stdio => cmd.args([
                "stdio",
                env!("CARGO_BIN_EXE_chorus"),
                &format!("http://{addr}"),
            ]),
            Transport::Http => cmd.args(["http", &format!("http://{addr}/mcp")]),
        };
        let mut child = cmd
            .env("CHORUS_TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut bridge = Self {
            child,
            stdin,
            lines,
            next_id: 1,
            notifications: std::collections::VecDeque::new(),
        };
        let ready = bridge.line().await;
        assert_eq!(ready["ready"], true, "{ready}");
        bridge
    }

    /// The next line that is not a notification (those are kept for [`Self::notification`]).
    async fn line(&mut self) -> Value {
        loop {
            let line = self.raw_line().await;
            if line.get("notification").is_some() {
                self.notifications.push_back(line);
            } else {
                return line;
            }
        }
    }

    /// The next notification of the listen stream (`{notification: uri, at_ms}`).
    async fn notification(&mut self) -> Value {
        if let Some(n) = self.notifications.pop_front() {
            return n;
        }
        let line = self.raw_line().await;
        assert!(
            line.get("notification").is_some(),
            "not a notification: {line}"
        );
        line
    }

    async fn raw_line(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("the MCP client answered nothing in time")
            .unwrap()
            .expect("the MCP client exited");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Sends a command; returns its id once the client says the call started.
    async fn begin(&mut self, mut command: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        let mut line = command.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        let started = self.line().await;
        assert_eq!(started["id"], id, "{started}");
        id
    }

    async fn finish(&mut self, id: u64) -> Value {
        let done = self.line().await;
        assert_eq!(done["id"], id, "{done}");
        done
    }

    async fn call(&mut self, tool: &str, args: Value) -> Outcome {
        let id = self.begin(json!({"tool": tool, "args": args})).await;
        let done = self.finish(id).await;
        outcome(done)
    }

    /// A command other than a tool call; its outcome line.
    async fn command(&mut self, command: Value) -> Value {
        let id = self.begin(command).await;
        let done = self.finish(id).await;
        assert!(done.get("exception").is_none(), "{done}");
        done
    }

    async fn list_tools(&mut self) -> Vec<Value> {
        let id = self.begin(json!({"list_tools": true})).await;
        let done = self.finish(id).await;
        done["tools"].as_array().cloned().unwrap_or_default()
    }

    async fn close(mut self) {
        drop(self.stdin);
        let status = tokio::time::timeout(WAIT, self.child.wait()).await;
        assert!(
            status.is_ok_and(|s| s.is_ok_and(|s| s.success())),
            "the MCP client did not exit cleanly"
        );
    }
}

fn outcome(done: Value) -> Outcome {
    if let Some(exception) = done["exception"].as_str() {
        // The SDK refused the call itself (a protocol error): a clear error all the same.
        return Outcome {
            is_error: true,
            result: Value::Null,
            text: exception.to_owned(),
            elapsed_ms: 0.0,
            done_ms: 0.0,
        };
    }
    Outcome {
        is_error: done["is_error"].as_bool().unwrap(),
        result: done["result"].clone(),
        text: done["text"].as_str().unwrap_or_default().to_owned(),
        elapsed_ms: done["elapsed_ms"].as_f64().unwrap(),
        done_ms: done["done_ms"].as_f64().unwrap(),
    }
}

/// The people and places of a test.
struct World {
    addr: SocketAddr,
    _data: tempfile::TempDir,
    _server: Child,
    admin: Client,
    alice: Client,
    bot: UserWithToken,
    carol: UserWithToken,
    team: ChannelId,
    secret: ChannelId,
}

async fn world() -> World {
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let server = common::serve(addr, data.path(), ADMIN, &[]).await;
    let base = format!("http://{addr}");
    let admin = Client::new(&base, ADMIN).unwrap();
    let alice = admin.create_user(&CreateUser::new("alice")).await.unwrap();
    // Agents with webhooks: a woken agent with no live connection gets a delivery queued.
    let hook = Some(format!("http://{}/hook", free_addr()));
    let bot = admin
        .create_user(&CreateUser {
            webhook_url: hook.clone(),
            ..CreateUser::agent("bot")
        })
        .await
        .unwrap();
    let carol = admin
        .create_user(&CreateUser {
            webhook_url: hook,
            ..CreateUser::agent("carol")
        })
        .await
        .unwrap();
    let alice = admin.with_token(alice.token);
    let ws: WorkspaceId = alice.create_workspace("acme").await.unwrap().id;
    for user in [&bot, &carol] {
        alice
            .add_workspace_member(
                ws,
                &chorus_client::AddMember {
                    user_id: user.user.id,
                    role: chorus_client::Role::Member,
                },
            )
            .await
            .unwrap();
    }
    let team = alice
        .create_channel(
            ws,
            &CreateChannel {
                policy: Some(Policy::Mentions),
                member_ids: vec![bot.user.id, carol.user.id],
                ..CreateChannel::new("team")
            },
        )
        .await
        .unwrap()
        .id;
    let secret = alice
        .create_channel(
            ws,
            &CreateChannel {
                kind: ChannelKind::Private,
                ..CreateChannel::new("secret")
            },
        )
        .await
        .unwrap()
        .id;
    World {
        addr,
        _data: data,
        _server: server,
        admin,
        alice,
        bot,
        carol,
        team,
        secret,
    }
}

impl World {
    /// The webhook deliveries queued for `user` (asked as the admin).
    async fn deliveries(&self, user: UserId) -> Vec<Value> {
        let resp = reqwest::Client::new()
            .get(format!(
                "http://{}/api/v1/users/{user}/webhook-deliveries",
                self.addr
            ))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        resp.json().await.unwrap()
    }
}

/// The next `message.created` on `live` with this text (others are passed over).
async fn expect_message(live: &mut Realtime, text: &str) -> EventFrame {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = live.next_event().await.expect("alice's connection ended");
            if event.kind == "message.created" && event.data["text"] == text {
                return event;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("alice never saw {text:?}"))
}

fn texts(waited: &Value) -> Vec<String> {
    waited["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"]["text"].as_str().unwrap().to_owned())
        .collect()
}

async fn scenario(transport: Transport, python: String) {
    let w = world().await;
    let mut live = w.alice.realtime().await.unwrap();
    let mut mcp = Bridge::start(transport, &python, w.addr, &w.bot.token).await;

    // Tools, each with a schema.
    let tools = mcp.list_tools().await;
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "list_channels",
            "react",
            "read_messages",
            "report",
            "send_message",
            "set_status",
            "wait_for_messages"
        ]
    );
    for tool in &tools {
        assert_eq!(tool["input_schema"]["type"], "object", "{tool}");
        assert_eq!(tool["output_schema"]["type"], "object", "{tool}");
    }
    let read = tools.iter().find(|t| t["name"] == "read_messages").unwrap();
    assert_eq!(read["input_schema"]["required"], json!(["channel_id"]));

    // Where the agent is: the team channel with its policy; not the private one.
    let listed = mcp.call("list_channels", json!({})).await.ok();
    assert_eq!(listed["me"]["name"], "bot");
    let channels = &listed["workspaces"][0]["channels"];
    let team = channels
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == w.team.0)
        .unwrap();
    assert_eq!(team["policy"], "mentions");
    assert_eq!(team["member"], true);
    assert!(
        !channels
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == w.secret.0)
    );

    // A cursor for "now", then what happens after it.
    let start = mcp
        .call("wait_for_messages", json!({"timeout_ms": 0}))
        .await
        .ok();
    assert_eq!(start["events"], json!([]));
    let c0 = start["cursor"].as_str().unwrap().to_owned();

    // Sends are seen by another user's WebSocket.
    let sent = mcp
        .call(
            "send_message",
            json!({"channel_id": w.team.0, "text": "hello from mcp"}),
        )
        .await
        .ok();
    assert_eq!(sent["replayed"], false);
    let seen = expect_message(&mut live, "hello from mcp").await;
    assert_eq!(seen.data["author_id"], w.bot.user.id.0);

    // Under `mentions`, a plain message only lets the bot observe; a mention wakes it.
    let team_send = |text: &str| {
        let alice = w.alice.clone();
        let text = text.to_owned();
        let team = w.team;
        async move {
            alice
                .send_message(team, &SendMessage::new(text), None)
                .await
                .unwrap()
                .message
        }
    };
    team_send("just chatting").await;
    let mention = team_send("@bot @carol please help").await;
    let woken = mcp
        .call(
            "wait_for_messages",
            json!({"cursor": c0, "timeout_ms": 10_000}),
        )
        .await
        .ok();
    assert_eq!(texts(&woken), ["@bot @carol please help"], "{woken}");
    let event = &woken["events"][0];
    assert_eq!(event["wake"], true);
    assert_eq!(event["channel"], "team");
    assert_eq!(event["message"]["author"], "alice");
    assert_eq!(event["message"]["mentions_me"], true);
    let c1 = woken["cursor"].as_str().unwrap().to_owned();

    // The wake went to the MCP session, so no webhook for the bot; carol, woken by the
    // same message with no connection, got one (queued before the send answered).
    assert_eq!(w.deliveries(w.carol.user.id).await.len(), 1);
    assert_eq!(w.deliveries(w.bot.user.id).await, Vec::<Value>::new());

    // With `all`: every new message by others, the observed one unwoken; not its own.
    let all = mcp
        .call(
            "wait_for_messages",
            json!({"cursor": c0, "all": true, "timeout_ms": 0}),
        )
        .await
        .ok();
    assert_eq!(
        texts(&all),
        ["just chatting", "@bot @carol please help"],
        "{all}"
    );
    assert_eq!(all["events"][0]["wake"], false);
    assert_eq!(all["events"][1]["wake"], true);

    // Nothing new after c1: the wait ends at its timeout, empty.
    let quiet = mcp
        .call(
            "wait_for_messages",
            json!({"cursor": c1, "timeout_ms": 500}),
        )
        .await;
    assert!(
        (450.0..5_000.0).contains(&quiet.elapsed_ms),
        "a 500 ms wait took {} ms",
        quiet.elapsed_ms
    );
    let quiet = quiet.ok();
    assert_eq!(quiet["events"], json!([]));
    assert_eq!(quiet["timed_out"], true);
    let c2 = quiet["cursor"].as_str().unwrap().to_owned();

    // A wake during a wait ends it at once, with that wake alone (never the first again).
    let mut latencies = Vec::new();
    let mut cursor = c2;
    for round in 0..3 {
        let id = mcp
            .begin(json!({"tool": "wait_for_messages", "args": {"cursor": cursor, "timeout_ms": 15_000}}))
            .await;
        // Not needed for correctness (the cursor catches a wake sent before the wait),
        // only so that the wake lands in the middle of the wait being measured.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let text = format!("@bot round {round}");
        let sent_at = now_ms();
        team_send(&text).await;
        let done = outcome(mcp.finish(id).await);
        let latency = done.done_ms - sent_at;
        let done = done.ok();
        assert_eq!(texts(&done), [text.as_str()], "{done}");
        latencies.push(latency);
        cursor = done["cursor"].as_str().unwrap().to_owned();
    }
    eprintln!("MCP {transport:?}: wake → wait_for_messages result: {latencies:.1?} ms");
    for latency in &latencies {
        assert!(*latency < WAKE_BOUND_MS, "woken after {latency:.1} ms");
    }

    // Reading: the latest page, paging forward, a thread, a budget.
    let page = mcp
        .call("read_messages", json!({"channel_id": w.team.0, "limit": 2}))
        .await
        .ok();
    let page_texts: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(page_texts, ["@bot round 1", "@bot round 2"]);
    assert_eq!(page["has_older"], true);
    let forward = mcp
        .call(
            "read_messages",
            json!({"channel_id": w.team.0, "after": mention.id.0, "limit": 1}),
        )
        .await
        .ok();
    assert_eq!(forward["messages"][0]["text"], "@bot round 0");
    assert_eq!(forward["more"], true);
    let budget = mcp
        .call(
            "read_messages",
            json!({"channel_id": w.team.0, "max_chars": 200}),
        )
        .await
        .ok();
    assert_eq!(budget["messages"].as_array().unwrap().len(), 1, "{budget}");
    assert!(budget["messages"][0].to_string().len() <= 200);
    let reply = mcp
        .call(
            "send_message",
            json!({"channel_id": w.team.0, "text": "on it", "thread_id": mention.id.0, "idempotency_key": "k1"}),
        )
        .await
        .ok();
    assert_eq!(reply["message"]["thread_id"], mention.id.0);
    let again = mcp
        .call(
            "send_message",
            json!({"channel_id": w.team.0, "text": "on it", "thread_id": mention.id.0, "idempotency_key": "k1"}),
        )
        .await
        .ok();
    assert_eq!(again["replayed"], true);
    assert_eq!(again["message"]["id"], reply["message"]["id"]);
    // Reading with `mark_read` moves the read cursor: nothing unread is left.
    let unread = |listed: &Value| {
        listed["workspaces"][0]["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == w.team.0)
            .unwrap()["unread"]
            .as_i64()
            .unwrap()
    };
    let before = mcp
        .call("list_channels", json!({"member_only": true}))
        .await
        .ok();
    assert!(unread(&before) > 0, "{before}");
    mcp.call(
        "read_messages",
        json!({"channel_id": w.team.0, "mark_read": true}),
    )
    .await
    .ok();
    let after = mcp
        .call("list_channels", json!({"member_only": true}))
        .await
        .ok();
    assert_eq!(unread(&after), 0, "{after}");
    let thread = mcp
        .call(
            "read_messages",
            json!({"channel_id": w.team.0, "thread_id": mention.id.0}),
        )
        .await
        .ok();
    assert_eq!(thread["messages"].as_array().unwrap().len(), 1);

    // React and status.
    let reacted = mcp
        .call("react", json!({"message_id": mention.id.0, "emoji": "👀"}))
        .await
        .ok();
    assert_eq!(reacted["reactions"], json!([{"emoji": "👀", "count": 1}]));
    let status = mcp
        .call("set_status", json!({"text": "triaging"}))
        .await
        .ok();
    assert_eq!(status["status_text"], "triaging");
    // Receipts: the mention woke the bot, which reports that it works on it.
    let reported = mcp
        .call(
            "report",
            json!({"message_id": mention.id.0, "state": "working"}),
        )
        .await
        .ok();
    assert_eq!(reported["receipts"][0]["state"], "working", "{reported}");
    let unknown = mcp
        .call(
            "report",
            json!({"message_id": 999_999_999, "state": "done"}),
        )
        .await;
    assert_eq!(unknown.error_code(), "not_found");

    // What the bot may not read, and bad input: clear errors.
    let private = mcp
        .call("read_messages", json!({"channel_id": w.secret.0}))
        .await;
    assert_eq!(private.error_code(), "forbidden");
    let bad_cursor = mcp
        .call("wait_for_messages", json!({"cursor": "nope"}))
        .await;
    assert_eq!(bad_cursor.error_code(), "bad_cursor");
    let out_of_range = mcp
        .call("read_messages", json!({"channel_id": w.team.0, "limit": 0}))
        .await;
    assert_eq!(out_of_range.error_code(), "bad_request");
    for (tool, args) in [
        ("read_messages", json!({"channel_id": "team"})),
        ("send_message", json!({"channel_id": w.team.0})),
        (
            "react",
            json!({"message_id": 1, "emoji": "x", "extra": true}),
        ),
    ] {
        let refused = mcp.call(tool, args.clone()).await;
        assert!(refused.is_error, "{tool} {args}: {:?}", refused.result);
        assert!(
            refused.text.contains("parameters") || refused.text.contains("argument"),
            "{tool} {args}: {}",
            refused.text
        );
    }
    mcp.close().await;
    let _ = w.admin;
}

/// The `chorus://wakes` resource: listed, readable, and subscribed to with
/// `subscriptions/listen`, a wake sends `notifications/resources/updated` and
/// `wait_for_messages` then returns it; a message the agent only observes sends none.
async fn wake_notifications(transport: Transport, python: String) {
    const URI: &str = "chorus://wakes";
    let w = world().await;
    let mut mcp = Bridge::start(transport, &python, w.addr, &w.bot.token).await;

    let listed = mcp.command(json!({"list_resources": true})).await;
    let resources = listed["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 1, "{listed}");
    assert_eq!(resources[0]["uri"], URI);
    let summary = |read: &Value| -> Value {
        serde_json::from_str(read["contents"][0]["text"].as_str().unwrap()).unwrap()
    };
    let before = summary(&mcp.command(json!({"read_resource": URI})).await);
    assert_eq!(before["channels"], json!([]), "{before}");
    assert!(
        before["how"]
            .as_str()
            .unwrap()
            .contains("wait_for_messages")
    );
    let unknown = mcp
        .begin(json!({"read_resource": "chorus://nothing"}))
        .await;
    let unknown = mcp.finish(unknown).await;
    assert!(unknown.get("exception").is_some(), "{unknown}");

    let start = mcp
        .call("wait_for_messages", json!({"timeout_ms": 0}))
        .await
        .ok();
    let c0 = start["cursor"].as_str().unwrap().to_owned();
    let listening = mcp.command(json!({"listen": [URI]})).await;
    assert_eq!(listening["honored"], json!([URI]), "{listening}");

    // An observed message, and a barrier: a long poll for every message returns it,
    // which takes the bot's connection having rung its bell for it. Then a wake: the
    // first notification must come after that was sent, and be the wake.
    let all = mcp
        .begin(json!({"tool": "wait_for_messages", "args": {"cursor": c0, "all": true, "timeout_ms": 10_000}}))
        .await;
    w.alice
        .send_message(w.team, &SendMessage::new("just chatting"), None)
        .await
        .unwrap();
    let observed = outcome(mcp.finish(all).await).ok();
    assert_eq!(texts(&observed), ["just chatting"], "{observed}");
    let c1 = observed["cursor"].as_str().unwrap().to_owned();
    let sent_at = now_ms();
    w.alice
        .send_message(w.team, &SendMessage::new("@bot look"), None)
        .await
        .unwrap();
    let first = mcp.notification().await;
    assert_eq!(first["notification"], URI, "{first}");
    let at = first["at_ms"].as_f64().unwrap();
    assert!(
        at >= sent_at,
        "a notification came {:.1} ms before the wake was sent (the observed message?)",
        sent_at - at
    );
    let latency = at - sent_at;
    eprintln!("MCP {transport:?}: wake → notifications/resources/updated: {latency:.1} ms");
    assert!(latency < WAKE_BOUND_MS, "notified after {latency:.1} ms");
    let woken = mcp
        .call("wait_for_messages", json!({"cursor": c1, "timeout_ms": 0}))
        .await
        .ok();
    assert_eq!(texts(&woken), ["@bot look"], "{woken}");
    let after = summary(&mcp.command(json!({"read_resource": URI})).await);
    assert_eq!(after["channels"][0]["channel_id"], w.team.0, "{after}");
    assert_eq!(after["channels"][0]["channel"], "team", "{after}");

    // Each later wake notifies again.
    let c2 = woken["cursor"].as_str().unwrap().to_owned();
    w.alice
        .send_message(w.team, &SendMessage::new("@bot again"), None)
        .await
        .unwrap();
    assert_eq!(mcp.notification().await["notification"], URI);
    let again = mcp
        .call("wait_for_messages", json!({"cursor": c2, "timeout_ms": 0}))
        .await
        .ok();
    assert_eq!(texts(&again), ["@bot again"], "{again}");

    // Ending the subscription ends its stream; the tools go on.
    let stopped = mcp.command(json!({"unlisten": true})).await;
    assert_eq!(stopped["stopped"], true);
    mcp.call("list_channels", json!({})).await.ok();
    mcp.close().await;
}

/// A round-robin turn that passes to the agent (the agent it was given declined it) is a
/// wake: the `chorus://wakes` subscription is notified, and `wait_for_messages` returns
/// the message with `wake: true` — though the message itself only had the agent observe.
/// The author's cancel of that turn wakes the agent again, with `turn: "cancelled"`.
async fn turn_passed_wakes(transport: Transport, python: String) {
    const URI: &str = "chorus://wakes";
    let w = world().await;
    let ws = w.alice.list_workspaces().await.unwrap()[0].workspace.id;
    let turns = w
        .alice
        .create_channel(
            ws,
            &CreateChannel {
                policy: Some(Policy::RoundRobin),
                member_ids: vec![w.bot.user.id, w.carol.user.id],
                ..CreateChannel::new("turns")
            },
        )
        .await
        .unwrap()
        .id;
    let mut mcp = Bridge::start(transport, &python, w.addr, &w.bot.token).await;
    let start = mcp
        .call("wait_for_messages", json!({"timeout_ms": 0}))
        .await
        .ok();
    let c0 = start["cursor"].as_str().unwrap().to_owned();
    let listening = mcp.command(json!({"listen": [URI]})).await;
    assert_eq!(listening["honored"], json!([URI]), "{listening}");

    // The mention gives carol the turn; the bot only observes the message.
    let mut live = w.alice.realtime().await.unwrap();
    let sent = w
        .alice
        .send_message(turns, &SendMessage::new("@carol over to you"), None)
        .await
        .unwrap()
        .message;
    expect_message(&mut live, "@carol over to you").await;
    let observed = mcp
        .call(
            "wait_for_messages",
            json!({"cursor": c0, "all": true, "timeout_ms": 10_000}),
        )
        .await
        .ok();
    assert_eq!(texts(&observed), ["@carol over to you"], "{observed}");
    assert_eq!(observed["events"][0]["wake"], false, "{observed}");
    let c1 = observed["cursor"].as_str().unwrap().to_owned();

    // Carol declines: the turn passes to the bot at once, which wakes it.
    let carol = w.admin.with_token(w.carol.token.clone());
    carol
        .receipt(sent.id, chorus_client::ReceiptState::Declined)
        .await
        .unwrap();
    let first = mcp.notification().await;
    assert_eq!(first["notification"], URI, "{first}");
    let woken = mcp
        .call(
            "wait_for_messages",
            json!({"cursor": c1, "timeout_ms": 10_000}),
        )
        .await
        .ok();
    assert_eq!(texts(&woken), ["@carol over to you"], "{woken}");
    let event = &woken["events"][0];
    assert_eq!(event["wake"], true, "{woken}");
    assert_eq!(event["turn"], "passed", "{woken}");
    assert_eq!(event["channel"], "turns", "{woken}");
    assert_eq!(event["message"]["id"], sent.id.0, "{woken}");
    let summary = mcp.command(json!({"read_resource": URI})).await;
    let summary: Value =
        serde_json::from_str(summary["contents"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(summary["channels"][0]["channel_id"], turns.0, "{summary}");

    // Passed on from the cursor: the same wake is not returned twice.
    let c2 = woken["cursor"].as_str().unwrap().to_owned();
    let again = mcp
        .call("wait_for_messages", json!({"cursor": c2, "timeout_ms": 0}))
        .await
        .ok();
    assert_eq!(texts(&again), Vec::<String>::new(), "{again}");

    // Alice cancels the bot's turn: a wake saying so, about the same message.
    let cancelled = w.alice.cancel(sent.id, None).await.unwrap();
    assert_eq!(cancelled.cancelled, [w.bot.user.id], "{cancelled:?}");
    let rung = mcp.notification().await;
    assert_eq!(rung["notification"], URI, "{rung}");
    let told = mcp
        .call(
            "wait_for_messages",
            json!({"cursor": c2, "timeout_ms": 10_000}),
        )
        .await
        .ok();
    assert_eq!(texts(&told), ["@carol over to you"], "{told}");
    assert_eq!(told["events"][0]["wake"], true, "{told}");
    assert_eq!(told["events"][0]["turn"], "cancelled", "{told}");
    assert_eq!(told["events"][0]["message"]["id"], sent.id.0, "{told}");
    let stopped = mcp.command(json!({"unlisten": true})).await;
    assert_eq!(stopped["stopped"], true);
    mcp.close().await;
}

/// `/mcp` takes the same credentials as the API: a user's bearer token; no token, a
/// revoked one or a server key are refused before any tool runs.
async fn http_endpoint_is_authenticated_like_the_api() {
    let w = world().await;
    let url = format!("http://{}/mcp", w.addr);
    let http = reqwest::Client::new();
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}});
    let post = |token: Option<&str>| {
        let mut req = http
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(&list);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send()
    };
    let code = |body: Value| {
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    let resp = post(None).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(code(resp.json().await.unwrap()), "unauthorized");

    let token = w
        .admin
        .create_token(
            w.bot.user.id,
            &CreateToken {
                name: "mcp".into(),
                expires_in: None,
            },
        )
        .await
        .unwrap();
    let resp = post(Some(&token.token)).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let body = resp.text().await.unwrap();
    assert!(body.contains("\"name\":\"chorus\""), "{body}");

    w.admin
        .revoke_token(w.bot.user.id, token.info.id)
        .await
        .unwrap();
    let resp = post(Some(&token.token)).await.unwrap();
    assert_eq!(resp.status(), 401);

    let key = http
        .post(format!("http://{}/api/v1/server-keys", w.addr))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "backend", "permissions": ["publish"]}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let resp = post(key["key"].as_str()).await.unwrap();
    assert_eq!(resp.status(), 403);
    let _ = (&w.carol, w.team, w.secret, &w.alice);
}

/// Clients of the protocol versions with sessions get one per `initialize`: one user
/// keeps at most `MAX_SESSIONS_PER_USER` open, the least recently used closed first
/// (its id then gets `404`), and another user's sessions are not touched.
async fn http_sessions_are_bounded_per_user() {
    let w = world().await;
    let url = format!("http://{}/mcp", w.addr);
    let http = reqwest::Client::new();
    let (bot, carol) = (w.bot.token.clone(), w.carol.token.clone());
    let initialize = |bearer: &str| {
        http.post(&url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .bearer_auth(bearer)
            .json(
                &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "test", "version": "1"}}}),
            )
            .send()
    };
    let open = |bearer: String| {
        let initialize = &initialize;
        async move {
            let resp = initialize(&bearer).await.unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
            let id = resp.headers()["mcp-session-id"]
                .to_str()
                .unwrap()
                .to_owned();
            resp.text().await.unwrap();
            id
        }
    };
    // A request in session `id`: `404` once the session is closed.
    let status_in = |bearer: &str, id: &str| {
        http.post(&url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .header("mcp-session-id", id)
            .bearer_auth(bearer)
            .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .send()
    };
    let status = |resp: reqwest::Response| resp.status().as_u16();
    let carols = open(carol.clone()).await;
    let mut bots = Vec::new();
    for _ in 0..chorus_mcp::MAX_SESSIONS_PER_USER {
        bots.push(open(bot.clone()).await);
    }
    // The first is used again: the second is now the least recently used.
    assert_eq!(status(status_in(&bot, &bots[0]).await.unwrap()), 202);
    bots.push(open(bot.clone()).await);
    assert_eq!(
        status(status_in(&bot, &bots[1]).await.unwrap()),
        404,
        "the LRU closed"
    );
    for (i, id) in bots.iter().enumerate().filter(|(i, _)| *i != 1) {
        let got = status(status_in(&bot, id).await.unwrap());
        assert_eq!(got, 202, "session {i}, within the bound");
    }
    let got = status(status_in(&carol, &carols).await.unwrap());
    assert_eq!(got, 202, "another user's session");
    let _ = (&w.alice, w.team, w.secret);
}

/// A session is its opener's: another user's bearer with its `Mcp-Session-Id` gets
/// exactly what an id that names no session gets — `GET` (the notification stream),
/// `POST` (a tool call in it) and `DELETE` alike, so ids cannot be probed — and the
/// session goes on for its opener, who can still close it.
///
/// Raw HTTP on the 2025-06-18 handshake: the Python SDK speaks the stateless 2026-07-28
/// protocol, which has no sessions.
async fn http_session_is_only_its_openers() {
    const UNKNOWN: &str = "0b9e3c52-7d1a-4c8e-9f3b-5a6d2e1c4f70";
    let w = world().await;
    let url = format!("http://{}/mcp", w.addr);
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let (bot, carol) = (w.bot.token.as_str(), w.carol.token.as_str());
    let request = |method: reqwest::Method, bearer: &str, session: Option<&str>| {
        let mut req = http
            .request(method, &url)
            .header("mcp-protocol-version", "2025-06-18")
            .bearer_auth(bearer);
        if let Some(id) = session {
            req = req.header("mcp-session-id", id);
        }
        req
    };
    let post = |bearer: &str, session: Option<&str>, body: Value| {
        request(reqwest::Method::POST, bearer, session)
            .header("accept", "application/json, text/event-stream")
            .json(&body)
            .send()
    };
    let get = |bearer: &str, session: &str| {
        request(reqwest::Method::GET, bearer, Some(session))
            .header("accept", "text/event-stream")
            .send()
    };
    let delete = |bearer: &str, session: &str| {
        request(reqwest::Method::DELETE, bearer, Some(session)).send()
    };
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "list_channels", "arguments": {}}});

    // Carol opens a session.
    let opened = post(
        carol,
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"}}}),
    )
    .await
    .unwrap();
    assert!(opened.status().is_success(), "{}", opened.status());
    let carols = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    opened.text().await.unwrap();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let resp = post(carol, Some(&carols), initialized).await.unwrap();
    assert_eq!(resp.status(), 202);

    // The bot, with carol's session id: each answer next to the one for an unknown id.
    // Every difference is collected, so one run shows them all; a body is read only
    // when the statuses agree (a stream that was let in never ends).
    let mut wrong = Vec::new();
    let pairs = [
        ("GET", get(bot, &carols).await, get(bot, UNKNOWN).await),
        (
            "POST",
            post(bot, Some(&carols), call.clone()).await,
            post(bot, Some(UNKNOWN), call.clone()).await,
        ),
        (
            "DELETE",
            delete(bot, &carols).await,
            delete(bot, UNKNOWN).await,
        ),
    ];
    for (method, foreign, unknown) in pairs {
        let (foreign, unknown) = (foreign.unwrap(), unknown.unwrap());
        if foreign.status() != unknown.status() {
            wrong.push(format!(
                "{method}: {} for carol's session, {} for an unknown one",
                foreign.status(),
                unknown.status()
            ));
            continue;
        }
        let kind = |r: &reqwest::Response| r.headers().get("content-type").cloned();
        let (foreign_kind, unknown_kind) = (kind(&foreign), kind(&unknown));
        let (foreign, unknown) = (foreign.text().await.unwrap(), unknown.text().await.unwrap());
        if (&foreign_kind, &foreign) != (&unknown_kind, &unknown) {
            wrong.push(format!(
                "{method}: {foreign_kind:?} {foreign:?} for carol's session, \
                 {unknown_kind:?} {unknown:?} for an unknown one"
            ));
        }
    }

    // Carol's session is untouched: her calls, her notification stream, her DELETE.
    let resp = post(carol, Some(&carols), call.clone()).await.unwrap();
    if resp.status() == 200 {
        let body = resp.text().await.unwrap();
        assert!(body.contains("team"), "{body}");
    } else {
        wrong.push(format!(
            "carol's own call in her session after the bot's requests: {}",
            resp.status()
        ));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let stream = get(carol, &carols).await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    drop(stream);
    assert_eq!(delete(carol, &carols).await.unwrap().status(), 202);
    let resp = post(carol, Some(&carols), call).await.unwrap();
    assert_eq!(resp.status(), 404, "closed by its opener");
    let _ = (&w.alice, w.team, w.secret);
}

/// `examples/mcp-agent.py --once`, over stdio and then over `/mcp`: it answers a mention
/// in its thread, using nothing but MCP tools.
async fn example_agent_answers_a_mention(python: String) {
    let w = world().await;
    let mut live = w.alice.realtime().await.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/mcp-agent.py");
    for (round, transport) in [Transport::Stdio, Transport::Http].into_iter().enumerate() {
        let mut cmd = tokio::process::Command::new(&python);
        cmd.args([script, "--once"])
            .env("CHORUS_TOKEN", &w.bot.token)
            .env("CHORUS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        match transport {
            Transport::Stdio => cmd
                .env("CHORUS_BIN", env!("CARGO_BIN_EXE_chorus"))
                .env("CHORUS_URL", format!("http://{}", w.addr)),
            Transport::Http => cmd.env("CHORUS_MCP_URL", format!("http://{}/mcp", w.addr)),
        };
        let mut agent = cmd.spawn().unwrap();
        let mut lines = BufReader::new(agent.stdout.take().unwrap()).lines();
        let listening = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("the example agent did not start")
            .unwrap()
            .unwrap_or_default();
        assert_eq!(listening, "bot: listening", "{transport:?}");
        let text = format!("@bot what is up? ({round})");
        let question = w
            .alice
            .send_message(w.team, &SendMessage::new(&text), None)
            .await
            .unwrap()
            .message;
        let answer = tokio::time::timeout(WAIT, async {
            loop {
                let event = live.next_event().await.expect("alice's connection ended");
                if event.kind == "message.created" && event.data["author_id"] == w.bot.user.id.0 {
                    return event;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{transport:?}: the example agent never answered"));
        assert_eq!(answer.data["thread_id"], question.id.0, "{transport:?}");
        assert!(
            answer.data["text"]
                .as_str()
                .unwrap()
                .starts_with("Hi @alice"),
            "{}",
            answer.data
        );
        let status = tokio::time::timeout(WAIT, agent.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{transport:?}: the example agent failed");
    }
}
