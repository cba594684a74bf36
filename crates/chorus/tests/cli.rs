//! The CLI as admins and scripts run it: the real `chorus` binary against a real
//! server on an ephemeral port. Each subcommand's happy path (tables by default, JSON
//! lines with `--json`) and its clearest error (exit status 1 and the server's error
//! code on stderr; 2 and clap's message for a bad command line).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

mod common;
use common::{call, free_addr, serve};

const ADMIN: &str = "cli-admin";
const WAIT: Duration = Duration::from_secs(20);

/// What one run of the binary left.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    #[track_caller]
    fn ok(self) -> String {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        // Progress (spinners) is not drawn when stderr is not a terminal.
        assert_eq!(self.stderr, "", "stderr of a successful command");
        self.stdout
    }

    /// The JSON lines of a successful `--json` run.
    #[track_caller]
    fn lines(self) -> Vec<Value> {
        self.ok()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[track_caller]
    fn one(self) -> Value {
        let mut lines = self.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        lines.remove(0)
    }

    /// A refusal: exit status `code`, nothing on stdout; returns stderr.
    #[track_caller]
    fn fails(self, code: i32) -> String {
        assert_eq!(
            self.code,
            Some(code),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert_eq!(self.stdout, "", "stdout of a failed command");
        self.stderr
    }
}

/// The binary pointed at one server, as one caller.
#[derive(Clone)]
struct Chorus {
    url: String,
    token: String,
}

impl Chorus {
    fn new(addr: SocketAddr, token: &str) -> Self {
        Self {
            url: format!("http://{addr}"),
            token: token.to_owned(),
        }
    }

    fn as_(&self, token: &str) -> Self {
        Self {
            url: self.url.clone(),
            token: token.to_owned(),
        }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_chorus"));
        cmd.args(args)
            .env("CHORUS_URL", &self.url)
            .env("CHORUS_TOKEN", &self.token)
            .env_remove("CHORUS_CA_FILE")
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, args: &[&str]) -> Out {
        let out = tokio::time::timeout(WAIT, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("chorus {args:?} did not finish"))
            .unwrap();
        Out {
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// `run` with `--json` added.
    async fn json(&self, args: &[&str]) -> Out {
        let mut args = args.to_vec();
        args.push("--json");
        self.run(&args).await
    }
}

/// The table's header and rows (up to the first empty line): each column starts where
/// its header does (header names have single spaces, columns are two or more apart;
/// the cells here are one column wide a character).
fn table(text: &str) -> Vec<Vec<String>> {
    let mut lines = text.lines().take_while(|l| !l.is_empty());
    let header: Vec<char> = lines.next().unwrap_or_default().chars().collect();
    let mut starts = vec![0];
    for i in 2..header.len() {
        if header[i] != ' ' && header[i - 1] == ' ' && header[i - 2] == ' ' {
            starts.push(i);
        }
    }
    let split = |line: &str| -> Vec<String> {
        let chars: Vec<char> = line.chars().collect();
        (0..starts.len())
            .map(|c| {
                let from = starts[c].min(chars.len());
                let to = starts
                    .get(c + 1)
                    .map_or(chars.len(), |&e| e.min(chars.len()));
                chars[from..to].iter().collect::<String>().trim().to_owned()
            })
            .collect()
    };
    std::iter::once(split(&header.iter().collect::<String>()))
        .chain(lines.map(split))
        .collect()
}

/// The column `name` of a table's rows.
fn column(text: &str, name: &str) -> Vec<String> {
    let rows = table(text);
    let header = &rows[0];
    let i = header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"));
    rows[1..].iter().map(|r| r[i].clone()).collect()
}

fn id(v: &Value) -> String {
    v["id"].as_i64().unwrap().to_string()
}

async fn server() -> (tokio::process::Child, tempfile::TempDir, Chorus) {
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let child = serve(addr, data.path(), ADMIN, &[]).await;
    (child, data, Chorus::new(addr, ADMIN))
}

#[tokio::test]
async fn users() {
    let (_server, _data, admin) = server().await;

    // create: a table row, then the token shown once.
    let out = admin
        .run(&["user", "create", "alice", "--display-name", "Alice Liddell"])
        .await
        .ok();
    let rows = table(&out);
    assert_eq!(
        rows[0],
        [
            "ID",
            "NAME",
            "DISPLAY NAME",
            "KIND",
            "ADMIN",
            "CREATED",
            "DEACTIVATED"
        ]
    );
    assert_eq!(rows[1][..4], ["2", "alice", "Alice Liddell", "human"]);
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    assert!(token.starts_with("chr_"), "{out}");
    assert_eq!(
        admin
            .as_(token)
            .json(&["token", "list"])
            .await
            .lines()
            .len(),
        1
    );

    // --json: the API's object, one line.
    let bot = admin
        .json(&["user", "create", "bot", "--agent", "--admin"])
        .await
        .one();
    assert_eq!(bot["user"]["kind"], "agent", "{bot}");
    assert_eq!(bot["user"]["is_admin"], true, "{bot}");
    assert!(bot["token"].as_str().unwrap().starts_with("chr_"));
    let bot_id = id(&bot["user"]);

    // list
    let out = admin.run(&["user", "list"]).await.ok();
    assert_eq!(column(&out, "NAME"), ["admin", "alice", "bot"]);
    assert_eq!(column(&out, "ADMIN"), ["admin", "", "admin"]);
    let users = admin.json(&["user", "list", "--after", "1"]).await.lines();
    let names: Vec<&str> = users.iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bot"]);

    // deactivate / reactivate
    let out = admin.run(&["user", "deactivate", &bot_id]).await.ok();
    assert_ne!(column(&out, "DEACTIVATED"), [""], "{out}");
    let bot_token = bot["token"].as_str().unwrap();
    let refused = admin
        .as_(bot_token)
        .run(&["workspace", "list"])
        .await
        .fails(1);
    assert!(refused.contains("unauthorized"), "{refused}");
    let back = admin.json(&["user", "reactivate", &bot_id]).await.one();
    assert!(back.get("deactivated_at").is_none(), "{back}");
    admin.as_(bot_token).run(&["workspace", "list"]).await.ok();

    // Errors: the server's code and message; exit status 1.
    let err = admin.run(&["user", "create", "Not Valid"]).await.fails(1);
    assert!(
        err.contains("bad_request") && err.contains("name must match"),
        "{err}"
    );
    let err = admin
        .as_(token)
        .run(&["user", "create", "carol"])
        .await
        .fails(1);
    assert!(err.contains("forbidden"), "{err}");
    let err = admin.run(&["user", "deactivate", "999"]).await.fails(1);
    assert!(err.contains("not_found"), "{err}");
    let err = admin.run(&["user", "reactivate", "999"]).await.fails(1);
    assert!(err.contains("not_found"), "{err}");
    let err = admin.run(&["user", "list", "--after", "x"]).await.fails(2);
    assert!(err.contains("invalid value 'x'"), "{err}");
}

#[tokio::test]
async fn tokens() {
    let (_server, _data, admin) = server().await;
    let alice = admin.json(&["user", "create", "alice"]).await.one();
    let alice_id = id(&alice["user"]);
    let alice = admin.as_(alice["token"].as_str().unwrap());

    // create: the caller's own; a table row and the secret.
    let out = alice
        .run(&["token", "create", "laptop", "--expires-in", "3600"])
        .await
        .ok();
    assert_eq!(column(&out, "NAME"), ["laptop"]);
    assert_ne!(column(&out, "EXPIRES"), ["never"]);
    let laptop = out
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let ci = alice.json(&["token", "create", "ci"]).await.one();
    assert_eq!(ci["name"], "ci");
    assert!(ci["token"].as_str().unwrap().starts_with("chr_"));

    // list: never the secrets; another user's with the admin token.
    let out = alice.run(&["token", "list"]).await.ok();
    assert_eq!(column(&out, "NAME"), ["default", "laptop", "ci"]);
    assert!(!out.contains("chr_"), "{out}");
    let listed = admin
        .json(&["token", "list", "--user", &alice_id])
        .await
        .lines();
    assert_eq!(listed.len(), 3);
    assert!(
        listed.iter().all(|t| t.get("token").is_none()),
        "{listed:?}"
    );

    // revoke: the token is refused from then on.
    let out = alice.run(&["token", "revoke", &id(&ci)]).await.ok();
    assert_eq!(
        out,
        format!("revoked token {} of user {alice_id}\n", id(&ci))
    );
    let err = alice
        .as_(ci["token"].as_str().unwrap())
        .run(&["token", "list"])
        .await
        .fails(1);
    assert!(err.contains("unauthorized"), "{err}");
    let laptop_id = column(&out_of(&alice, &["token", "list"]).await, "ID")[1].clone();
    assert_eq!(
        admin
            .json(&["token", "revoke", &laptop_id, "--user", &alice_id])
            .await
            .ok(),
        ""
    );
    let err = alice.as_(&laptop).run(&["token", "list"]).await.fails(1);
    assert!(err.contains("unauthorized"), "{err}");

    // Errors: an unknown token; another user's without the admin token.
    let err = alice
        .run(&["token", "create", "x", "--user", "1"])
        .await
        .fails(1);
    assert!(
        err.contains("forbidden") || err.contains("not_found"),
        "{err}"
    );
    let err = alice.run(&["token", "revoke", "999"]).await.fails(1);
    assert!(err.contains("not_found"), "{err}");
    let err = alice.run(&["token", "list", "--user", "1"]).await.fails(1);
    assert!(
        err.contains("forbidden") || err.contains("not_found"),
        "{err}"
    );
}

#[tokio::test]
async fn sign_in_links() {
    let (_server, _data, admin) = server().await;
    let carol = admin.json(&["user", "create", "carol"]).await.one();
    let carol_id = id(&carol["user"]);

    // The link to hand over: the server's address and a one-time code.
    let out = admin
        .run(&["user", "sign-in-link", &carol_id, "--expires-in", "3600"])
        .await
        .ok();
    let link = out.lines().next().unwrap();
    let prefix = format!("{}/#signin=chs_", admin.url);
    assert!(link.starts_with(&prefix), "{out}");
    assert!(out.contains("works once, until"), "{out}");
    let code = link.rsplit_once("#signin=").unwrap().1;

    // It signs carol in once, through the Rust SDK with no token of its own.
    let client = chorus_client::Client::new(&admin.url, "").unwrap();
    let signed_in = client.sign_in(code).await.unwrap();
    assert_eq!(id(&json!(signed_in.user)), carol_id);
    let again = client.sign_in(code).await.unwrap_err();
    assert!(again.to_string().contains("gone"), "{again}");

    // --json: the server's answer.
    let made = admin.json(&["user", "sign-in-link", &carol_id]).await.one();
    assert_eq!(
        made["url_fragment"],
        format!("#signin={}", made["code"].as_str().unwrap())
    );
    // Only a server admin makes links.
    let carol = admin.as_(carol["token"].as_str().unwrap());
    let err = carol
        .run(&["user", "sign-in-link", &carol_id])
        .await
        .fails(1);
    assert!(err.contains("forbidden"), "{err}");
    let err = admin
        .run(&["user", "sign-in-link", &carol_id, "--expires-in", "5"])
        .await
        .fails(1);
    assert!(err.contains("bad_request"), "{err}");
}

async fn out_of(chorus: &Chorus, args: &[&str]) -> String {
    chorus.run(args).await.ok()
}

/// alice and bob in workspace `acme` (alice its admin); returns (alice, bob, ws id,
/// alice's id, bob's id).
async fn team(admin: &Chorus) -> (Chorus, Chorus, String, String, String) {
    let alice = admin.json(&["user", "create", "alice"]).await.one();
    let bob = admin.json(&["user", "create", "bob"]).await.one();
    let ws = admin.json(&["workspace", "create", "acme"]).await.one();
    let (alice_id, bob_id, ws) = (id(&alice["user"]), id(&bob["user"]), id(&ws));
    admin
        .json(&[
            "member",
            "add",
            "--workspace",
            &ws,
            &alice_id,
            "--role",
            "admin",
        ])
        .await
        .ok();
    admin
        .json(&["member", "add", "--workspace", &ws, &bob_id])
        .await
        .ok();
    (
        admin.as_(alice["token"].as_str().unwrap()),
        admin.as_(bob["token"].as_str().unwrap()),
        ws,
        alice_id,
        bob_id,
    )
}

#[tokio::test]
async fn workspaces_and_members() {
    let (_server, _data, admin) = server().await;

    // workspace create / list
    let out = admin.run(&["workspace", "create", "acme"]).await.ok();
    assert_eq!(table(&out)[0], ["ID", "NAME", "CREATED BY", "CREATED"]);
    assert_eq!(column(&out, "NAME"), ["acme"]);
    let ws = column(&out, "ID")[0].clone();
    let alice = admin.json(&["user", "create", "alice"]).await.one();
    let bob = admin.json(&["user", "create", "bob"]).await.one();
    let (alice_id, bob_id) = (id(&alice["user"]), id(&bob["user"]));
    let alice = admin.as_(alice["token"].as_str().unwrap());
    assert_eq!(
        table(&alice.run(&["workspace", "list"]).await.ok()).len(),
        1
    );

    // member add (workspace) with a role, and the older spelling
    let out = admin
        .run(&[
            "member",
            "add",
            "--workspace",
            &ws,
            &alice_id,
            "--role",
            "admin",
        ])
        .await
        .ok();
    assert_eq!(column(&out, "ROLE"), ["admin"]);
    let added = admin
        .json(&["workspace", "add-member", &ws, &bob_id])
        .await
        .one();
    assert_eq!(added["role"], "member", "{added}");
    let out = alice.run(&["workspace", "list"]).await.ok();
    assert_eq!(column(&out, "ROLE"), ["admin"]);

    // member list: names, roles
    let out = alice
        .run(&["member", "list", "--workspace", &ws])
        .await
        .ok();
    assert_eq!(
        table(&out)[0],
        [
            "USER ID",
            "NAME",
            "DISPLAY NAME",
            "KIND",
            "ROLE",
            "ONLINE",
            "STATUS"
        ]
    );
    assert_eq!(column(&out, "NAME"), ["admin", "alice", "bob"]);
    assert_eq!(column(&out, "ROLE"), ["owner", "admin", "member"]);

    // member role / workspace set-role
    let changed = alice
        .json(&["member", "role", "--workspace", &ws, &bob_id, "guest"])
        .await
        .one();
    assert_eq!(changed["role"], "guest", "{changed}");
    let out = alice
        .run(&["workspace", "set-role", &ws, &bob_id, "member"])
        .await
        .ok();
    assert_eq!(column(&out, "ROLE"), ["member"]);

    // observers
    let out = alice
        .run(&["workspace", "observers", &ws, &bob_id])
        .await
        .ok();
    assert_eq!(out, format!("observers: {bob_id}\n"));
    let set = alice.json(&["workspace", "observers", &ws]).await.one();
    assert_eq!(set, json!({"user_ids": []}));

    // member remove
    let out = alice
        .run(&["member", "remove", "--workspace", &ws, &bob_id])
        .await
        .ok();
    assert_eq!(out, format!("removed user {bob_id} from workspace {ws}\n"));
    let listed = alice
        .json(&["member", "list", "--workspace", &ws])
        .await
        .lines();
    assert_eq!(listed.len(), 2, "{listed:?}");

    // Errors
    let err = admin.run(&["member", "list"]).await.fails(2);
    assert!(
        err.contains("--workspace") && err.contains("--channel"),
        "{err}"
    );
    let err = admin
        .run(&["member", "list", "--workspace", &ws, "--channel", "1"])
        .await
        .fails(2);
    assert!(err.contains("cannot be used with"), "{err}");
    let err = admin
        .run(&[
            "member",
            "add",
            "--channel",
            "1",
            &bob_id,
            "--role",
            "admin",
        ])
        .await
        .fails(2);
    assert!(err.contains("cannot be used with"), "{err}");
    let err = admin
        .run(&["member", "role", "--workspace", &ws, &bob_id, "boss"])
        .await
        .fails(2);
    assert!(err.contains("owner, admin, member, guest"), "{err}");
    let err = admin
        .run(&["workspace", "add-member", &ws, "999"])
        .await
        .fails(1);
    assert!(err.contains("not_found"), "{err}");
    let err = admin.run(&["workspace", "create", ""]).await.fails(1);
    assert!(err.contains("bad_request"), "{err}");
    let outsider = admin.json(&["user", "create", "eve"]).await.one();
    let outsider = admin.as_(outsider["token"].as_str().unwrap());
    let err = outsider
        .run(&["member", "list", "--workspace", &ws])
        .await
        .fails(1);
    assert!(
        err.contains("not_found") || err.contains("forbidden"),
        "{err}"
    );
    let err = outsider
        .run(&["workspace", "observers", &ws])
        .await
        .fails(1);
    assert!(
        err.contains("not_found") || err.contains("forbidden"),
        "{err}"
    );
}

#[tokio::test]
async fn channels_and_dms() {
    let (_server, _data, admin) = server().await;
    let (alice, bob, ws, alice_id, bob_id) = team(&admin).await;

    // create (public, with a member and a topic) / list
    let out = alice
        .run(&[
            "channel", "create", &ws, "general", "--member", &bob_id, "--topic", "hi all",
        ])
        .await
        .ok();
    assert_eq!(
        table(&out)[0],
        ["ID", "WORKSPACE", "NAME", "KIND", "POLICY", "TOPIC"]
    );
    assert_eq!(
        table(&out)[1][1..],
        [&ws, "general", "public", "all", "hi all"]
    );
    let general = column(&out, "ID")[0].clone();
    let agents = alice
        .json(&[
            "channel",
            "create",
            &ws,
            "agents",
            "--private",
            "--policy",
            "on_duty",
        ])
        .await
        .one();
    assert_eq!(agents["kind"], "private");
    assert_eq!(agents["policy"], "on_duty");
    let agents = id(&agents);
    let out = alice.run(&["channel", "list", &ws]).await.ok();
    assert_eq!(column(&out, "NAME"), ["general", "agents"]);
    assert_eq!(column(&out, "JOINED"), ["yes", "yes"]);
    let out = bob.run(&["channel", "list", &ws]).await.ok();
    assert_eq!(column(&out, "NAME"), ["general"]);

    // leave / join
    assert_eq!(
        bob.run(&["channel", "leave", &general]).await.ok(),
        format!("left channel {general}\n")
    );
    let joined = bob.json(&["channel", "join", &general]).await.one();
    assert_eq!(joined["name"], "general");

    // member add / list / remove on a channel
    let out = alice
        .run(&["member", "add", "--channel", &agents, &bob_id])
        .await
        .ok();
    assert_eq!(column(&out, "NAME"), ["agents"]);
    let out = alice
        .run(&["member", "list", "--channel", &agents])
        .await
        .ok();
    assert_eq!(column(&out, "NAME"), ["alice", "bob"]);
    alice
        .json(&["member", "remove", "--channel", &agents, &bob_id])
        .await
        .ok();
    let listed = alice
        .json(&["member", "list", "--channel", &agents])
        .await
        .lines();
    let ids: Vec<String> = listed.iter().map(|m| id(&m["user"])).collect();
    assert_eq!(ids, [alice_id]);
    let view = alice
        .json(&["channel", "add-member", &agents, &bob_id])
        .await
        .one();
    assert_eq!(view["member_ids"].as_array().unwrap().len(), 2, "{view}");

    // on-duty / wake-list
    let out = alice
        .run(&["channel", "on-duty", &agents, &bob_id])
        .await
        .ok();
    assert_eq!(out, format!("on duty: {bob_id}\n"));
    let custom = alice
        .json(&[
            "channel", "create", &ws, "custom", "--policy", "custom", "--member", &bob_id,
        ])
        .await
        .one();
    let set = alice
        .json(&["channel", "wake-list", &id(&custom), &bob_id])
        .await
        .one();
    assert_eq!(set["user_ids"], json!([bob_id.parse::<i64>().unwrap()]));

    // dm
    let out = alice.run(&["dm", &ws, &bob_id]).await.ok();
    assert_eq!(column(&out, "KIND"), ["dm"]);
    let dm = alice.json(&["dm", &ws, &bob_id]).await.one();
    assert_eq!(id(&dm), column(&out, "ID")[0], "the same DM again");

    // Errors
    let err = bob
        .run(&["channel", "create", &ws, "general"])
        .await
        .fails(1);
    assert!(err.contains("conflict"), "{err}");
    let secret = alice
        .json(&["channel", "create", &ws, "secret", "--private"])
        .await
        .one();
    let err = bob.run(&["channel", "join", &id(&secret)]).await.fails(1);
    assert!(
        err.contains("not_found") || err.contains("forbidden"),
        "{err}"
    );
    let err = alice
        .run(&["channel", "create", &ws, "x", "--policy", "loud"])
        .await
        .fails(2);
    assert!(err.contains("unknown Policy"), "{err}");
    let err = alice
        .run(&["channel", "on-duty", "999", &bob_id])
        .await
        .fails(1);
    assert!(err.contains("not_found"), "{err}");
    let err = alice.run(&["channel", "leave", "999"]).await.fails(1);
    assert!(err.contains("not_found"), "{err}");
    let err = alice.run(&["dm", &ws]).await.fails(2);
    assert!(err.contains("USER_IDS"), "{err}");
}

#[tokio::test]
async fn send_and_history() {
    let (_server, _data, admin) = server().await;
    let (alice, bob, ws, _, bob_id) = team(&admin).await;
    let ch = alice
        .json(&["channel", "create", &ws, "general", "--member", &bob_id])
        .await
        .one();
    let ch = id(&ch);

    // send: a table row with the author's name; terminal control characters escaped.
    let out = alice
        .run(&["send", &ch, "hello @bob\n\u{1b}[2Jsee you"])
        .await
        .ok();
    assert_eq!(table(&out)[0], ["ID", "TIME", "AUTHOR", "TEXT"]);
    assert_eq!(column(&out, "AUTHOR"), ["alice"]);
    assert_eq!(column(&out, "TEXT"), ["hello @bob\\n\\u{1b}[2Jsee you"]);
    assert!(!out.contains('\u{1b}'), "{out:?}");
    let root = column(&out, "ID")[0].clone();
    let reply = bob
        .json(&["send", &ch, "a reply", "--thread", &root])
        .await
        .one();
    assert_eq!(reply["thread_id"].to_string(), root);
    // An idempotency key makes a retry return the first message, said on stderr.
    let first = bob
        .json(&["send", &ch, "once", "--idempotency-key", "k1"])
        .await
        .one();
    let again = bob
        .json(&["send", &ch, "once", "--idempotency-key", "k1"])
        .await;
    assert_eq!(again.code, Some(0));
    assert!(
        again.stderr.contains("idempotent replay"),
        "{}",
        again.stderr
    );
    assert_eq!(
        serde_json::from_str::<Value>(again.stdout.trim()).unwrap()["id"],
        first["id"]
    );

    // history: top level, oldest first, with names and the reply count; a thread.
    let out = bob.run(&["history", &ch]).await.ok();
    assert_eq!(column(&out, "AUTHOR"), ["alice", "bob"]);
    assert!(column(&out, "TEXT")[0].ends_with("[1 reply]"), "{out}");
    let replies = bob.json(&["history", &ch, "--thread", &root]).await.lines();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["text"], "a reply");
    let page = bob.json(&["history", &ch, "--limit", "1"]).await.lines();
    assert_eq!(page[0]["text"], "once", "the latest page");

    // --all pages through more than one request's worth, in order.
    for i in 0..230 {
        call(
            admin_addr(&admin),
            &alice.token,
            &format!("/api/v1/channels/{ch}/messages"),
            json!({"text": format!("bulk {i}")}),
        )
        .await;
    }
    let all = bob.json(&["history", &ch, "--all"]).await.lines();
    assert_eq!(all.len(), 232);
    let ids: Vec<i64> = all.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending");
    assert_eq!(all[231]["text"], "bulk 229");
    let out = bob
        .run(&[
            "history",
            &ch,
            "--all",
            "--after",
            &all[200]["id"].to_string(),
        ])
        .await
        .ok();
    assert_eq!(column(&out, "TEXT").len(), 31);

    // Errors
    let outsider = admin.json(&["user", "create", "eve"]).await.one();
    let outsider = admin.as_(outsider["token"].as_str().unwrap());
    let err = outsider.run(&["send", &ch, "hi"]).await.fails(1);
    assert!(
        err.contains("not_found") || err.contains("forbidden"),
        "{err}"
    );
    let err = bob.run(&["history", "999"]).await.fails(1);
    assert!(err.contains("not_found"), "{err}");
    let err = bob
        .run(&["history", &ch, "--all", "--limit", "5"])
        .await
        .fails(2);
    assert!(err.contains("cannot be used with"), "{err}");
}

fn admin_addr(chorus: &Chorus) -> SocketAddr {
    chorus.url.trim_start_matches("http://").parse().unwrap()
}

/// `chorus tail`, started and waited for until it has subscribed to `scope`.
struct Tail {
    child: tokio::process::Child,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    stderr: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
}

impl Tail {
    async fn start(chorus: &Chorus, scope: &str, json: bool) -> Self {
        let mut args = vec!["tail", scope];
        if json {
            args.push("--json");
        }
        let mut child = chorus
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let subscribed = format!("subscribed to {scope}");
        loop {
            let line = tokio::time::timeout(WAIT, stderr.next_line())
                .await
                .expect("tail did not subscribe")
                .unwrap()
                .expect("tail ended before subscribing");
            if line == subscribed {
                break;
            }
        }
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// The next stdout line that contains `needle`.
    async fn line_with(&mut self, needle: &str) -> String {
        loop {
            let line = tokio::time::timeout(WAIT, self.stdout.next_line())
                .await
                .unwrap_or_else(|_| panic!("no line with {needle:?}"))
                .unwrap()
                .expect("tail ended");
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Ctrl-C: the tail closes the connection normally and exits 0.
    async fn interrupt(mut self) -> String {
        let pid = self.child.id().unwrap().to_string();
        let status = tokio::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap()
            .unwrap();
        let mut rest = String::new();
        while let Some(line) = self.stderr.next_line().await.unwrap() {
            rest.push_str(&line);
            rest.push('\n');
        }
        assert!(exit.success(), "{exit}: {rest}");
        rest
    }
}

#[tokio::test]
async fn tail() {
    let (_server, _data, admin) = server().await;
    let (alice, bob, ws, _, bob_id) = team(&admin).await;
    let ch = alice
        .json(&["channel", "create", &ws, "general", "--member", &bob_id])
        .await
        .one();
    let ch = id(&ch);
    let scope = format!("channel:{ch}");

    // --json: the event frames, as the socket has them.
    let mut tail = Tail::start(&bob, &scope, true).await;
    alice.json(&["send", &ch, "first"]).await.one();
    let line = tail.line_with("\"first\"").await;
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["scope"], scope.as_str(), "{event}");
    assert_eq!(event["type"], "message.created", "{event}");
    assert!(event["offset"].as_u64().is_some(), "{event}");
    let rest = tail.interrupt().await;
    assert!(rest.contains("closed: 1000"), "{rest}");

    // For people: scope, offset, type, author and text.
    let mut tail = Tail::start(&bob, &scope, false).await;
    alice.json(&["send", &ch, "second\nline"]).await.one();
    let line = tail.line_with("message.created").await;
    assert!(line.starts_with(&format!("{scope}  #")), "{line}");
    assert!(
        line.contains("message.created  alice: second\\nline"),
        "{line}"
    );
    tail.interrupt().await;

    // Error: a scope the caller may not subscribe to.
    let err = bob.run(&["tail", "channel:999"]).await.fails(1);
    assert!(err.contains("subscribing to channel:999"), "{err}");
}

#[tokio::test]
async fn connection_errors() {
    let (_server, _data, admin) = server().await;
    // No token at all: clap says which flag or variable is missing.
    let out = admin
        .command(&["user", "list"])
        .env_remove("CHORUS_TOKEN")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--token <TOKEN>"), "{err}");
    // A wrong token, and no server at the URL.
    let err = admin.as_("nope").run(&["user", "list"]).await.fails(1);
    assert!(err.contains("401") && err.contains("unauthorized"), "{err}");
    let nobody = Chorus::new(free_addr(), ADMIN);
    let err = nobody.run(&["user", "list"]).await.fails(1);
    assert!(err.contains("HTTP transport"), "{err}");

    // A password in the URL (a proxy's) is never printed, whatever fails.
    let nobody = Chorus {
        url: format!("http://u:url-pw@{}", free_addr()),
        token: ADMIN.into(),
    };
    let bad_port = Chorus {
        url: "http://u:url-pw@127.0.0.1:99999".into(),
        token: ADMIN.into(),
    };
    for (chorus, args, says) in [
        (&nobody, &["user", "list"][..], "HTTP transport"),
        (&nobody, &["mcp"], "connecting to Chorus at http://u:***@"),
        (&nobody, &["tail"], "WebSocket transport"),
        (&bad_port, &["user", "list"], "http://u:***@127.0.0.1:99999"),
        (&bad_port, &["tail"], "http://u:***@127.0.0.1:99999"),
    ] {
        let err = chorus.run(args).await.fails(1);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            !err.contains("url-pw"),
            "{args:?} shows the password: {err}"
        );
    }
}

/// `--token-file` keeps the token out of the process list; it wins over CHORUS_TOKEN.
#[tokio::test]
async fn token_from_a_file() {
    let (_server, _data, admin) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{ADMIN}\n")).unwrap();
    let path = file.to_str().unwrap();

    admin.json(&["user", "create", "dave"]).await.one();
    let listed = admin.json(&["user", "list"]).await.lines();
    let out = admin
        .command(&["user", "list", "--json", "--token-file", path])
        .env_remove("CHORUS_TOKEN")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().lines().count(),
        listed.len()
    );
    let wrong_env = admin.as_("nope");
    let args = ["user", "list", "--token-file", path];
    assert_eq!(wrong_env.json(&args).await.lines(), listed, "the file wins");

    std::fs::write(&file, "\n").unwrap();
    let err = admin.run(&["user", "list", "--token-file", path]).await;
    assert!(err.fails(1).contains("no token in"));
    let missing = dir.path().join("missing");
    let err = admin
        .run(&["user", "list", "--token-file", missing.to_str().unwrap()])
        .await
        .fails(1);
    assert!(err.contains("reading the token from"), "{err}");

    let help = admin.run(&["user", "list", "--help"]).await.ok();
    assert!(help.contains("--token-file <PATH>"), "{help}");
    assert!(help.contains("visible to other local users"), "{help}");
}

/// `--help` shows which variable sets each flag, never the value of one that can hold a
/// secret: a token, a key, or a URL with a password in it.
#[tokio::test]
async fn help_shows_no_secret_from_the_environment() {
    let chorus = Chorus::new(free_addr(), "t0ken-s3cret");
    let secrets = [
        ("CHORUS_DATABASE_URL", "postgres://u:s3cret@h/db", "s3cret"),
        ("CHORUS_REDIS_URL", "redis://:r3dis-pw@h:6379/0", "r3dis-pw"),
        (
            "CHORUS_JWT_JWKS",
            "https://u:jwk5-pw@idp.example/keys",
            "jwk5-pw",
        ),
        ("CHORUS_ADMIN_TOKEN", "adm1n-token", "adm1n-token"),
        (
            "CHORUS_JWT_SECRET",
            "jwt-s3cret-at-least-32-bytes-long",
            "jwt-s3cret",
        ),
        ("CHORUS_METRICS_TOKEN", "metr1cs-token", "metr1cs-token"),
        ("CHORUS_URL", "http://u:url-pw@127.0.0.1:9", "url-pw"),
    ];
    for args in [&["serve", "--help"][..], &["user", "list", "--help"]] {
        let mut command = chorus.command(args);
        for (var, value, _) in secrets {
            command.env(var, value);
        }
        let out = command.output().await.unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let help = String::from_utf8(out.stdout).unwrap();
        for (_, _, secret) in secrets {
            assert!(!help.contains(secret), "{args:?} shows {secret}:\n{help}");
        }
        assert!(
            !help.contains("t0ken-s3cret"),
            "{args:?} shows CHORUS_TOKEN:\n{help}"
        );
    }
}

#[tokio::test]
async fn completions() {
    let chorus = Chorus::new(free_addr(), ADMIN);
    for shell in ["bash", "zsh", "fish"] {
        let script = chorus.run(&["completions", shell]).await.ok();
        for word in [
            "serve", "user", "token", "member", "history", "tail", "bench",
        ] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let err = chorus.run(&["completions", "tcsh"]).await.fails(2);
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
    assert!(
        err.contains("bash") && err.contains("zsh") && err.contains("fish"),
        "{err}"
    );
}

/// Each shell parses its script (`-n`). Ignored by default, so that a machine without
/// zsh or fish reports it skipped, never passed; `scripts/test` installs them and runs
/// it (`--run-ignored all`).
#[tokio::test]
#[ignore = "needs bash, zsh and fish: scripts/test installs them and runs it"]
async fn completion_scripts_parse_in_their_shells() {
    let chorus = Chorus::new(free_addr(), ADMIN);
    for shell in ["bash", "zsh", "fish"] {
        let script = chorus.run(&["completions", shell]).await.ok();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &script).unwrap();
        let out = std::process::Command::new(shell)
            .arg("-n")
            .arg(file.path())
            .output()
            .unwrap_or_else(|e| panic!("{shell}: {e} (scripts/test installs it)"));
        assert!(
            out.status.success(),
            "{shell} -n: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn version_names_the_commit() {
    let chorus = Chorus::new(free_addr(), ADMIN);
    let out = chorus.run(&["--version"]).await.ok();
    let commit = env!("CHORUS_COMMIT");
    assert_eq!(
        out,
        format!("chorus {} ({commit})\n", env!("CARGO_PKG_VERSION"))
    );
    // In a git checkout, the commit it was built from; `unknown` in a tarball.
    match env!("CHORUS_COMMIT_SOURCE") {
        "git" => {
            let head = std::process::Command::new("git")
                .args(["rev-parse", "HEAD"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .unwrap();
            let head = String::from_utf8(head.stdout).unwrap();
            assert!(head.starts_with(commit), "{commit} is not HEAD {head}");
        }
        "none" => assert_eq!(commit, "unknown"),
        source => assert_eq!(source, "env", "given as CHORUS_COMMIT at build time"),
    }
}

#[tokio::test]
async fn bench() {
    let chorus = Chorus::new(free_addr(), ADMIN);
    // The smallest real run: both servers started (the baseline is `chorus bench
    // baseline-server`, this same binary), three connections each.
    let out = chorus.run(&["bench", "connect", "--conns", "3"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let rows = table(&out.stdout);
    assert_eq!(rows[0][..3], ["scenario", "target", "conns"]);
    let json: Vec<Value> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let targets: Vec<&str> = json.iter().map(|r| r["target"].as_str().unwrap()).collect();
    assert_eq!(targets, ["baseline", "chorus"]);
    assert!(json.iter().all(|r| r["conns"] == 3), "{json:?}");
    // --json: only the JSON lines.
    let out = chorus
        .run(&[
            "bench", "--json", "--target", "chorus", "connect", "--conns", "2",
        ])
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let row: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(row["target"], "chorus");

    // The baseline's frames are as big as Chorus's (its padding follows Chorus's
    // `message.created` frame; ids in a short run are shorter by a few digits).
    let out = chorus
        .run(&["bench", "--json", "fanout", "--subs", "2", "--seconds", "1"])
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let frames: Vec<(String, i64)> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|r| Some((r["target"].as_str()?.to_owned(), r["frame_bytes"].as_i64()?)))
        .collect();
    assert_eq!(frames.len(), 2, "{}", out.stdout);
    let (baseline, chorus_frame) = (frames[0].1, frames[1].1);
    assert!(
        (baseline - chorus_frame).abs() <= 8,
        "baseline frames {baseline} bytes, Chorus's {chorus_frame}: {frames:?}"
    );

    // Persisted sends, each sender on its own kept-alive HTTP/1.1 connection: every
    // send answered 2xx (without the per-token rate limit, which rightly refuses a
    // flood from one token), on one connection per sender.
    let out = chorus
        .run(&[
            "bench",
            "--json",
            "--server-arg=--http-per-sec=0",
            "--target",
            "chorus",
            "send",
            "--concurrency",
            "2",
            "--seconds",
            "1",
        ])
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let row: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(row["errors"], 0, "{row}");
    assert_eq!(row["connections"], 2, "{row}");
    assert!(row["sent"].as_u64().is_some_and(|n| n > 2), "{row}");

    // Error: a chorus binary that is not there.
    let out = chorus
        .run(&[
            "bench",
            "--target",
            "chorus",
            "--chorus-bin",
            "/nonexistent/chorus",
            "connect",
            "--conns",
            "1",
        ])
        .await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("starting chorus"), "{}", out.stderr);
}

#[tokio::test]
async fn namespaces_export_ts() {
    let chorus = Chorus::new(free_addr(), ADMIN);
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/gateway.example.toml"
    );
    let module = chorus
        .run(&["namespaces", "export-ts", "--config", example])
        .await
        .ok();
    assert!(
        module.contains("import { defineTopic } from \"@chorus/client\";"),
        "{module}"
    );
    assert!(
        module.contains("export const orders = defineTopic(\"orders.{order_id}\", ordersSchema);"),
        "{module}"
    );
    assert!(
        module.contains("export const news = defineTopic(\"news\");"),
        "{module}"
    );
    // clients/ts/test/topics.test.ts checks the whole module against a committed copy
    // and compiles it.

    // What a server would refuse at start is refused here, with the same reason.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[namespaces]]\nname = \"ops\"\npattern = \"topic:ops\"\nread = \"role:admin\"\n",
    )
    .unwrap();
    let err = chorus
        .run(&["namespaces", "export-ts", "--config", bad.to_str().unwrap()])
        .await
        .fails(1);
    assert!(
        err.contains("namespace \"ops\"") && err.contains("role"),
        "{err}"
    );
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "heartbeat_ms = 1000\n").unwrap();
    let err = chorus
        .run(&[
            "namespaces",
            "export-ts",
            "--config",
            empty.to_str().unwrap(),
        ])
        .await
        .fails(1);
    assert!(err.contains("declares no namespaces"), "{err}");
}

/// The answer's `Sec-WebSocket-Extensions` to an upgrade offering `permessage-deflate`
/// (as the admin), if any.
async fn extensions_answered(addr: SocketAddr, admin: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /ws?token={admin} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte))
            .await
            .expect("handshake timed out")
            .unwrap();
        assert_eq!(n, 1, "closed during the handshake");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| value.trim().to_owned())
    })
}

/// WebSocket compression is off unless configured: by the environment (as `--ws-compression`
/// and the TOML key `ws_compression` set the same field).
#[tokio::test]
async fn ws_compression_is_off_by_default_and_on_by_configuration() {
    const ADMIN: &str = "compression-admin";
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut server = serve(addr, &data.path().join("a"), ADMIN, &[]).await;
    assert_eq!(extensions_answered(addr, ADMIN).await, None);
    server.kill().await.unwrap();

    let addr = free_addr();
    let _server = serve(
        addr,
        &data.path().join("b"),
        ADMIN,
        &[("CHORUS_WS_COMPRESSION", "true")],
    )
    .await;
    let answer = extensions_answered(addr, ADMIN).await;
    assert_eq!(
        answer.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
}
