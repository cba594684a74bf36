//! The permission table of docs/protocol.md ("Permissions"), row by row against a real
//! server: each row is one HTTP call by a user holding one role, made on a workspace
//! built for that row alone, answered with exactly the status the table says. Then the
//! same for subscribing per scope kind, and the events that role changes and removals
//! publish (and the live subscriptions they take away).

#![allow(clippy::unwrap_used)]

mod common;

use std::fmt::Write as _;

use common::{ADMIN_TOKEN, TestServer, TestUser, WsClient, unique};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

// ---- who -----------------------------------------------------------------------------

/// Who makes the call. Every fixture gives each of them the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor {
    /// A server administrator who is not a member of the workspace.
    ServerAdmin,
    /// Created the workspace. A second owner exists unless the row removes them first.
    Owner,
    Admin,
    /// A member of `pub`, `priv` and `gpriv`.
    Member,
    /// A guest, member of `pub` and `priv`.
    Guest,
    /// A member who created `pub`, `open` and `priv`.
    Creator,
    /// Created `gpriv` as a member, then was made a guest.
    GuestCreator,
    /// A member in no channel.
    Bystander,
    /// A member who wrote `msg`: the subject of most role changes and removals.
    Target,
    /// Not a member of the workspace.
    Outsider,
    /// An agent, brought into the workspace and `pub` by the rows that need it (woken
    /// by their message).
    Agent,
}

/// The users, created once; each row's workspace gives them their roles.
struct People {
    server_admin: TestUser,
    owner: TestUser,
    owner2: TestUser,
    admin: TestUser,
    admin2: TestUser,
    member: TestUser,
    guest: TestUser,
    creator: TestUser,
    guest_creator: TestUser,
    bystander: TestUser,
    target: TestUser,
    /// A member in no channel, added to channels by the rows.
    spare: TestUser,
    outsider: TestUser,
    agent: TestUser,
}

impl People {
    async fn create(s: &TestServer) -> Self {
        let me = s.get("/api/v1/me", ADMIN_TOKEN).await;
        let server_admin = TestUser {
            id: me.body["id"].as_i64().unwrap(),
            name: "admin".into(),
            token: ADMIN_TOKEN.into(),
        };
        let mut made = Vec::new();
        for name in [
            "owner",
            "owner2",
            "admin",
            "admin2",
            "member",
            "guest",
            "creator",
            "gcreator",
            "bystander",
            "target",
            "spare",
            "outsider",
        ] {
            made.push(s.create_user(&unique(name)).await);
        }
        let agent_name = unique("agent");
        let agent = s
            .post(
                "/api/v1/users",
                ADMIN_TOKEN,
                json!({"name": agent_name, "kind": "agent"}),
            )
            .await
            .expect_status(StatusCode::CREATED);
        let agent = TestUser {
            id: agent.body["user"]["id"].as_i64().unwrap(),
            name: agent_name,
            token: agent.body["token"].as_str().unwrap().to_owned(),
        };
        let mut made = made.into_iter();
        let mut next = || made.next().unwrap();
        Self {
            server_admin,
            owner: next(),
            owner2: next(),
            admin: next(),
            admin2: next(),
            member: next(),
            guest: next(),
            creator: next(),
            guest_creator: next(),
            bystander: next(),
            target: next(),
            spare: next(),
            outsider: next(),
            agent,
        }
    }

    fn of(&self, actor: Actor) -> &TestUser {
        match actor {
            Actor::ServerAdmin => &self.server_admin,
            Actor::Owner => &self.owner,
            Actor::Admin => &self.admin,
            Actor::Member => &self.member,
            Actor::Guest => &self.guest,
            Actor::Creator => &self.creator,
            Actor::GuestCreator => &self.guest_creator,
            Actor::Bystander => &self.bystander,
            Actor::Target => &self.target,
            Actor::Outsider => &self.outsider,
            Actor::Agent => &self.agent,
        }
    }
}

/// One row's workspace.
struct Fixture {
    ws: i64,
    /// Public, by `creator`: creator, member, guest, target.
    public: i64,
    /// Public, by `creator`, nobody else.
    open: i64,
    /// Private, by `creator`: creator, owner, admin, member, guest, target.
    private: i64,
    /// Private, by `guest_creator` (since made a guest): guest_creator, member, target.
    guest_private: i64,
    /// Private, by `owner2`: owner2, target (neither `owner` nor `admin`).
    hidden: i64,
    /// By `target` in `public`.
    msg: i64,
    /// By `creator` in `open`, and in `private`: thread roots for the subscribe table.
    open_msg: i64,
    private_msg: i64,
}

async fn fixture(s: &TestServer, p: &People) -> Fixture {
    let ws = s.create_workspace(&p.owner, &unique("ws")).await;
    for (user, role) in [
        (&p.owner2, "owner"),
        (&p.admin, "admin"),
        (&p.admin2, "admin"),
        (&p.member, "member"),
        (&p.guest, "guest"),
        (&p.creator, "member"),
        (&p.guest_creator, "member"),
        (&p.bystander, "member"),
        (&p.target, "member"),
        (&p.spare, "member"),
    ] {
        s.add_member(&p.owner, ws, user, role).await;
    }
    let public = s
        .create_channel(
            &p.creator,
            ws,
            "pub",
            "public",
            &[&p.member, &p.guest, &p.target],
        )
        .await;
    let open = s
        .create_channel(&p.creator, ws, "open", "public", &[])
        .await;
    let private = s
        .create_channel(
            &p.creator,
            ws,
            "priv",
            "private",
            &[&p.owner, &p.admin, &p.member, &p.guest, &p.target],
        )
        .await;
    let guest_private = s
        .create_channel(
            &p.guest_creator,
            ws,
            "gpriv",
            "private",
            &[&p.member, &p.target],
        )
        .await;
    let hidden = s
        .create_channel(&p.owner2, ws, "hidden", "private", &[&p.target])
        .await;
    s.set_role(&p.owner, ws, &p.guest_creator, "guest")
        .await
        .expect_status(StatusCode::OK);
    let msg = s.send(&p.target, public, "from target").await["id"]
        .as_i64()
        .unwrap();
    let open_msg = s.send(&p.creator, open, "in the open").await["id"]
        .as_i64()
        .unwrap();
    let private_msg = s.send(&p.creator, private, "in private").await["id"]
        .as_i64()
        .unwrap();
    Fixture {
        ws,
        public,
        open,
        private,
        guest_private,
        hidden,
        msg,
        open_msg,
        private_msg,
    }
}

/// `by` registers `/{name}`, POSTed to a webhook where nothing listens (deliveries are
/// queued and fail, which no row looks at).
/// `by` registers `/deploy` for `agent`, made a member of `ws` first; the command's id.
async fn register_agent_command(s: &TestServer, by: &TestUser, ws: i64, agent: &TestUser) -> i64 {
    s.add_member(by, ws, agent, "member").await;
    let made = s
        .post(
            &format!("/api/v1/workspaces/{ws}/commands"),
            &by.token,
            json!({"name": "deploy", "target_user_id": agent.id}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    made.body["id"].as_i64().expect("the command's id")
}

async fn register_webhook_command(s: &TestServer, by: &TestUser, ws: i64, name: &str) {
    s.post(
        &format!("/api/v1/workspaces/{ws}/commands"),
        &by.token,
        json!({"name": name, "webhook_url": format!("http://127.0.0.1:9/{name}")}),
    )
    .await
    .expect_status(StatusCode::CREATED);
}

async fn remove(s: &TestServer, by: &TestUser, ws: i64, user: &TestUser) -> common::Resp {
    s.delete(
        &format!("/api/v1/workspaces/{ws}/members/{}", user.id),
        &by.token,
    )
    .await
}

// ---- what ----------------------------------------------------------------------------

/// One call of the table. The doc comment says what the call does.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// `POST …/members` the outsider as a member.
    AddMember,
    /// `POST …/members` the outsider as an owner.
    AddOwner,
    /// `POST …/members` someone who already is a member.
    AddExisting,
    /// `PATCH` target (member) → guest.
    DemoteMember,
    /// `PATCH` target (member) → admin.
    PromoteToAdmin,
    /// `PATCH` target (member) → owner.
    PromoteToOwner,
    /// `PATCH` admin2 → member.
    DemoteAdmin,
    /// `PATCH` owner2 → admin (two owners exist).
    DemoteOwner,
    /// `PATCH` oneself → guest.
    StepDown,
    /// `PATCH` oneself → admin.
    RaiseSelf,
    /// owner2 is removed first; then `PATCH` owner (the last one) → admin.
    DemoteLastOwner,
    /// `PATCH` the outsider, who is no member.
    RoleOfNonMember,
    /// `DELETE` target (member).
    RemoveMember,
    /// `DELETE` admin2.
    RemoveAdmin,
    /// `DELETE` owner2 (two owners exist).
    RemoveOwner,
    /// owner2 is removed first; then `DELETE` owner (the last one; by owner: leaving).
    RemoveLastOwner,
    /// `DELETE` the outsider.
    RemoveNonMember,
    /// `DELETE` oneself: leave the workspace.
    Leave,
    /// `PUT …/observers [member]`.
    SetObservers,
    /// `GET …/members`.
    ListMembers,
    /// `PATCH /channels/{priv}` name / topic / policy; `PUT` its on-duty / wake list.
    RenamePrivate,
    TopicPrivate,
    PolicyPrivate,
    OnDutyPrivate,
    WakeListPrivate,
    /// `POST /channels/{priv}/members` spare.
    AddToPrivate,
    /// `DELETE /channels/{priv}/members/{target}`.
    RemoveFromPrivate,
    /// The same on `gpriv`, whose creator is now a guest.
    RenameGuestPrivate,
    TopicGuestPrivate,
    PolicyGuestPrivate,
    OnDutyGuestPrivate,
    WakeListGuestPrivate,
    AddToGuestPrivate,
    /// `PATCH` / `GET messages` of `hidden`, a private channel owner and admin are not in.
    RenameHidden,
    ReadHidden,
    /// `GET /workspaces/{ws}/channels`: `200` when it lists `open` (a public channel
    /// only the creator is in), [`LEFT_OUT`] when it lists the workspace's channels
    /// without it.
    ListChannels,
    /// `POST /channels/{…}/leave`: `open` (public, only the creator in it), `hidden`,
    /// and a DM owner2 opened with target.
    LeaveOpen,
    LeaveHidden,
    LeaveOthersDm,
    /// `GET …/presence`, `GET …/observers` of the workspace.
    SeePresence,
    SeeObservers,
    /// `GET /channels/{open}` (public, only the creator in it).
    GetOpen,
    /// `GET /channels/{hidden}`, its `…/pins`, `…/on-duty`, `…/wake-list`.
    GetHidden,
    PinsHidden,
    OnDutyHidden,
    WakeListHidden,
    /// Target sends in `hidden`; then `POST /channels/{hidden}/read` that message.
    MarkReadHidden,
    /// `POST /channels/{hidden}/messages {streaming: true}`.
    OpenStreamHidden,
    /// Target opens a streaming message in `pub`; then `POST …/append` / `…/complete`.
    AppendOthers,
    CompleteOthers,
    /// The actor opens a streaming message in `pub` and aborts it: the first refusal's
    /// status, else the abort's.
    AbortOwn,
    /// `POST …/dms` with target.
    OpenDm,
    /// `POST /workspaces`.
    CreateWorkspace,
    /// `PATCH /channels/{pub}` name.
    RenamePublic,
    /// `POST /channels/{pub}/members` spare.
    AddToPublic,
    /// `DELETE /channels/{pub}/members/{target}`.
    RemoveFromPublic,
    /// `POST /channels/{open}/join`, `POST /channels/{priv}/join`.
    JoinOpen,
    JoinPrivate,
    /// `GET /channels/{…}/messages`.
    ReadPublic,
    ReadOpen,
    ReadPrivate,
    /// `GET /channels/{pub}/messages?thread_id={msg}`.
    ReadThread,
    /// `POST /channels/{pub}/messages`.
    SendPublic,
    /// `PATCH` / `DELETE /messages/{msg}` (target's message).
    EditOthers,
    DeleteOthers,
    /// `PATCH /messages/{msg}` by its author.
    EditOwn,
    /// `PATCH` / `DELETE` a message target sent in `hidden` (a private channel owner
    /// and admin are not in: footnote ¹, only in a channel they may read).
    EditHidden,
    DeleteHidden,
    /// Target sends in `priv`, the owner removes them from it; then `PATCH` / `DELETE`
    /// that message (one's own, in a channel one may no longer read).
    EditOwnAfterRemoval,
    DeleteOwnAfterRemoval,
    /// Target opens a streaming message in `pub` (in `hidden`); then `POST …/abort`.
    AbortOthers,
    AbortOthersHidden,
    /// `POST /workspaces/{ws}/channels` a public channel.
    CreateChannel,
    /// The creator pins `msg`; then `DELETE /messages/{msg}/pin`.
    Unpin,
    /// The actor's own reaction taken back: `DELETE /messages/{msg}/reactions/👍`.
    Unreact,
    /// `PUT /messages/{msg}/pin`, `PUT /messages/{msg}/reactions/👍`.
    Pin,
    React,
    /// The agent joins `pub` and target's `@agent` message there wakes it; then `POST
    /// /messages/{it}/receipts {working}`, and `POST /messages/{it}/cancel`.
    Receipt,
    CancelTurn,
    /// The agent joins `priv` and target's `@agent` message there wakes it; the owner
    /// removes it from `priv`; then `POST /messages/{it}/receipts {working}`.
    ReceiptAfterLeavingPrivate,
    /// Slash commands (issue 21): `POST …/commands` for the agent (brought into the
    /// workspace first), `GET …/commands`, `DELETE` one the owner registered, and
    /// `/topic` typed in `priv` (the same rule as `TopicPrivate`).
    RegisterCommand,
    ListCommands,
    DeleteCommand,
    TopicCommandPrivate,
    /// The other built-ins, as their routes: `/policy mentions` and `/invite @spare` in
    /// `priv`, `/leave` and `/me waves` in `hidden` (a command that runs answers 200).
    PolicyCommandPrivate,
    InviteCommandPrivate,
    LeaveCommandHidden,
    MeCommandHidden,
    /// The owner registers `/deploy` for the agent (brought into the workspace); then
    /// `/deploy prod` typed in `priv`; the second, after the owner removed the agent
    /// from the workspace.
    InvokeCommandPrivate,
    InvokeCommandOfRemovedAgent,
    /// `/ci go` typed in `priv`, `/ci` being a `webhook_url` command registered by the
    /// server admin (no member: admins need none); the second, registered by admin2,
    /// whom the owner then removed from the workspace.
    InvokeWebhookCommandPrivate,
    InvokeWebhookCommandOfRemovedRegistrant,
    /// The owner registers `/deploy` for the agent and `/ok` to a webhook, admin2 `/ci`
    /// to a webhook; the owner removes the agent and admin2 from the workspace. Then
    /// `GET …/commands`, and each command listed typed in `priv`: the first refusal's
    /// status, else the listing's.
    ListedCommandsRun,
    /// Server rows (issue 22): `POST /users/{target}/sign-in-links`, and the same for
    /// oneself.
    SignInLink,
    SignInLinkForSelf,
    /// `GET /users/{target}/sign-in-links`, and `DELETE` of a link id nobody has (an
    /// admin gets 404: the rule let it through).
    ListSignInLinks,
    RevokeSignInLink,
    /// Server routes: `POST /users` (a new name each call), `GET /users`, `POST
    /// /users/{target}/deactivate` (refusals only: the people are shared by every row),
    /// `POST /publish` to a topic, another user's (target's) tokens, `GET
    /// /server-keys`, `GET /realtime/stats`, `GET /namespaces`, and the agent's
    /// webhook deliveries.
    CreateUser,
    ListUsers,
    DeactivateTarget,
    PublishTopic,
    TargetsTokens,
    ListServerKeys,
    RealtimeStats,
    ListNamespaces,
    AgentsDeliveries,
    /// `POST /api/v1/proxy/sessions/revoke` (the application's logout; this server has
    /// no `[proxy.connect]`, so an admin gets `404`).
    RevokeProxySessions,
    /// `DELETE /api/v1/me/token` with a token the actor just created for themself (sign
    /// out: the request's own token is revoked).
    SignOut,
    /// The actor opens a DM with `target`, then sets its topic / one of its settings
    /// (`loop_guard_run`): any participant sets the topic, the settings are the
    /// workspace managers'.
    DmTopic,
    DmSettings,
    /// Target opens an MCP session on `/mcp` (the 2025-06-18 handshake); then a
    /// notification `POST`ed in it, with its `Mcp-Session-Id`.
    UseTargetsMcpSession,
}

impl Action {
    /// Makes the row's call (after its setup, made by the owner) and returns the status.
    async fn run(self, s: &TestServer, p: &People, fx: &Fixture, by: &TestUser) -> StatusCode {
        use Action::*;
        let ws = fx.ws;
        let members = format!("/api/v1/workspaces/{ws}/members");
        let member_path = |u: &TestUser| format!("{members}/{}", u.id);
        let channel = |id: i64| format!("/api/v1/channels/{id}");
        let call = |method: Method, path: String, body: Option<Value>| async move {
            s.call(method, &path, Some(&by.token), body).await.status
        };
        let add = |user: &TestUser, role: &str| {
            call(
                Method::POST,
                members.clone(),
                Some(json!({ "user_id": user.id, "role": role })),
            )
        };
        let role_of = |user: &TestUser, role: &str| {
            call(
                Method::PATCH,
                member_path(user),
                Some(json!({ "role": role })),
            )
        };
        let patch_channel = |id: i64, body: Value| call(Method::PATCH, channel(id), Some(body));
        let put_list = |id: i64, list: &str| {
            call(
                Method::PUT,
                format!("{}/{list}", channel(id)),
                Some(json!({ "user_ids": [p.member.id] })),
            )
        };
        let add_to = |id: i64, user: &TestUser| {
            call(
                Method::POST,
                format!("{}/members", channel(id)),
                Some(json!({ "user_id": user.id })),
            )
        };
        let read = |id: i64| call(Method::GET, format!("{}/messages", channel(id)), None);
        if matches!(self, DemoteLastOwner | RemoveLastOwner) {
            remove(s, &p.owner, ws, &p.owner2)
                .await
                .expect_status(StatusCode::NO_CONTENT);
        }
        match self {
            AddMember => add(&p.outsider, "member").await,
            AddOwner => add(&p.outsider, "owner").await,
            AddExisting => add(&p.target, "member").await,
            DemoteMember => role_of(&p.target, "guest").await,
            PromoteToAdmin => role_of(&p.target, "admin").await,
            PromoteToOwner => role_of(&p.target, "owner").await,
            DemoteAdmin => role_of(&p.admin2, "member").await,
            DemoteOwner => role_of(&p.owner2, "admin").await,
            StepDown => role_of(by, "guest").await,
            RaiseSelf => role_of(by, "admin").await,
            DemoteLastOwner => role_of(&p.owner, "admin").await,
            RoleOfNonMember => role_of(&p.outsider, "admin").await,
            RemoveMember => call(Method::DELETE, member_path(&p.target), None).await,
            RemoveAdmin => call(Method::DELETE, member_path(&p.admin2), None).await,
            RemoveOwner => call(Method::DELETE, member_path(&p.owner2), None).await,
            RemoveLastOwner => call(Method::DELETE, member_path(&p.owner), None).await,
            RemoveNonMember => call(Method::DELETE, member_path(&p.outsider), None).await,
            Leave => call(Method::DELETE, member_path(by), None).await,
            SetObservers => {
                call(
                    Method::PUT,
                    format!("/api/v1/workspaces/{ws}/observers"),
                    Some(json!({ "user_ids": [p.member.id] })),
                )
                .await
            }
            ListMembers => call(Method::GET, members.clone(), None).await,
            RenamePrivate => patch_channel(fx.private, json!({"name": "renamed"})).await,
            TopicPrivate => patch_channel(fx.private, json!({"topic": "new topic"})).await,
            PolicyPrivate => patch_channel(fx.private, json!({"policy": "mentions"})).await,
            OnDutyPrivate => put_list(fx.private, "on-duty").await,
            WakeListPrivate => put_list(fx.private, "wake-list").await,
            AddToPrivate => add_to(fx.private, &p.spare).await,
            RemoveFromPrivate => {
                let path = format!("{}/members/{}", channel(fx.private), p.target.id);
                call(Method::DELETE, path, None).await
            }
            SignInLink => {
                let path = format!("/api/v1/users/{}/sign-in-links", p.target.id);
                call(Method::POST, path, Some(json!({}))).await
            }
            SignInLinkForSelf => {
                let path = format!("/api/v1/users/{}/sign-in-links", by.id);
                call(Method::POST, path, Some(json!({}))).await
            }
            ListSignInLinks => {
                let path = format!("/api/v1/users/{}/sign-in-links", p.target.id);
                call(Method::GET, path, None).await
            }
            RevokeSignInLink => {
                let path = format!("/api/v1/users/{}/sign-in-links/987654321", p.target.id);
                call(Method::DELETE, path, None).await
            }
            CreateUser => {
                static MADE: std::sync::atomic::AtomicUsize =
                    std::sync::atomic::AtomicUsize::new(0);
                let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let body = json!({"name": format!("made-{n}"), "kind": "human"});
                call(Method::POST, "/api/v1/users".to_owned(), Some(body)).await
            }
            ListUsers => call(Method::GET, "/api/v1/users".to_owned(), None).await,
            DeactivateTarget => {
                let path = format!("/api/v1/users/{}/deactivate", p.target.id);
                call(Method::POST, path, None).await
            }
            PublishTopic => {
                let body = json!({"scope": "topic:news", "type": "note", "data": {}});
                call(Method::POST, "/api/v1/publish".to_owned(), Some(body)).await
            }
            TargetsTokens => {
                call(
                    Method::GET,
                    format!("/api/v1/users/{}/tokens", p.target.id),
                    None,
                )
                .await
            }
            ListServerKeys => call(Method::GET, "/api/v1/server-keys".to_owned(), None).await,
            RealtimeStats => call(Method::GET, "/api/v1/realtime/stats".to_owned(), None).await,
            ListNamespaces => call(Method::GET, "/api/v1/namespaces".to_owned(), None).await,
            AgentsDeliveries => {
                let path = format!("/api/v1/users/{}/webhook-deliveries", p.agent.id);
                call(Method::GET, path, None).await
            }
            RevokeProxySessions => {
                let path = "/api/v1/proxy/sessions/revoke".to_owned();
                call(Method::POST, path, Some(json!({"sub": "42"}))).await
            }
            DmTopic | DmSettings => {
                let opened = s
                    .post(
                        &format!("/api/v1/workspaces/{ws}/dms"),
                        &by.token,
                        json!({"user_ids": [p.target.id]}),
                    )
                    .await;
                let Some(dm) = opened.body["id"].as_i64() else {
                    return opened.status;
                };
                let change = if matches!(self, DmTopic) {
                    json!({"topic": "plans"})
                } else {
                    json!({"loop_guard_run": 0})
                };
                call(
                    Method::PATCH,
                    format!("/api/v1/channels/{dm}"),
                    Some(change),
                )
                .await
            }
            SignOut => {
                let minted = s
                    .post(
                        &format!("/api/v1/users/{}/tokens", by.id),
                        &by.token,
                        json!({"name": "browser"}),
                    )
                    .await;
                let Some(token) = minted.body["token"].as_str() else {
                    return minted.status;
                };
                s.call(Method::DELETE, "/api/v1/me/token", Some(token), None)
                    .await
                    .status
            }
            UseTargetsMcpSession => {
                let mcp = |bearer: &str, session: Option<&str>, body: Value| {
                    let mut req = s
                        .http
                        .post(format!("http://{}/mcp", s.addr))
                        .header("accept", "application/json, text/event-stream")
                        .header("mcp-protocol-version", "2025-06-18")
                        .bearer_auth(bearer)
                        .json(&body);
                    if let Some(id) = session {
                        req = req.header("mcp-session-id", id);
                    }
                    req.send()
                };
                let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "test", "version": "1"}}});
                let opened = mcp(&p.target.token, None, initialize).await.unwrap();
                assert!(opened.status().is_success(), "{}", opened.status());
                let id = opened.headers()["mcp-session-id"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                opened.text().await.unwrap();
                let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
                mcp(&by.token, Some(&id), initialized)
                    .await
                    .unwrap()
                    .status()
            }
            RenameGuestPrivate => patch_channel(fx.guest_private, json!({"name": "mine"})).await,
            TopicGuestPrivate => patch_channel(fx.guest_private, json!({"topic": "t"})).await,
            PolicyGuestPrivate => {
                patch_channel(fx.guest_private, json!({"policy": "broadcast"})).await
            }
            OnDutyGuestPrivate => put_list(fx.guest_private, "on-duty").await,
            WakeListGuestPrivate => put_list(fx.guest_private, "wake-list").await,
            AddToGuestPrivate => add_to(fx.guest_private, &p.spare).await,
            RenameHidden => patch_channel(fx.hidden, json!({"name": "found"})).await,
            ReadHidden => read(fx.hidden).await,
            ListChannels => {
                let listed = s
                    .call(
                        Method::GET,
                        &format!("/api/v1/workspaces/{ws}/channels"),
                        Some(&by.token),
                        None,
                    )
                    .await;
                let Some(channels) = listed.body.as_array() else {
                    return listed.status;
                };
                let ids: Vec<i64> = channels.iter().filter_map(|c| c["id"].as_i64()).collect();
                assert!(
                    !ids.is_empty(),
                    "{by:?}: a listing with no channel: {channels:?}"
                );
                if ids.contains(&fx.open) {
                    listed.status
                } else {
                    StatusCode::from_u16(LEFT_OUT).expect("a status")
                }
            }
            SeePresence => {
                call(
                    Method::GET,
                    format!("/api/v1/workspaces/{ws}/presence"),
                    None,
                )
                .await
            }
            SeeObservers => {
                call(
                    Method::GET,
                    format!("/api/v1/workspaces/{ws}/observers"),
                    None,
                )
                .await
            }
            GetOpen => call(Method::GET, channel(fx.open), None).await,
            GetHidden => call(Method::GET, channel(fx.hidden), None).await,
            PinsHidden => call(Method::GET, format!("{}/pins", channel(fx.hidden)), None).await,
            OnDutyHidden => {
                call(Method::GET, format!("{}/on-duty", channel(fx.hidden)), None).await
            }
            WakeListHidden => {
                call(
                    Method::GET,
                    format!("{}/wake-list", channel(fx.hidden)),
                    None,
                )
                .await
            }
            MarkReadHidden => {
                let sent = s.send(&p.target, fx.hidden, "in hidden").await;
                let body = json!({"message_id": sent["id"]});
                call(
                    Method::POST,
                    format!("{}/read", channel(fx.hidden)),
                    Some(body),
                )
                .await
            }
            OpenStreamHidden => {
                let body = json!({"text": "", "streaming": true});
                call(
                    Method::POST,
                    format!("{}/messages", channel(fx.hidden)),
                    Some(body),
                )
                .await
            }
            AppendOthers | CompleteOthers => {
                let opened = s
                    .post(
                        &format!("{}/messages", channel(fx.public)),
                        &p.target.token,
                        json!({"text": "", "streaming": true}),
                    )
                    .await
                    .expect_status(StatusCode::CREATED);
                let id = opened.body["id"].as_i64().expect("the message's id");
                let (path, body) = match self {
                    AppendOthers => ("append", json!({"text": "mine now"})),
                    _ => ("complete", json!({"text": "mine now"})),
                };
                call(
                    Method::POST,
                    format!("/api/v1/messages/{id}/{path}"),
                    Some(body),
                )
                .await
            }
            AbortOwn => {
                let opened = s
                    .post(
                        &format!("{}/messages", channel(fx.public)),
                        &by.token,
                        json!({"text": "", "streaming": true}),
                    )
                    .await;
                let Some(id) = opened.body["id"].as_i64() else {
                    return opened.status;
                };
                let path = format!("/api/v1/messages/{id}/abort");
                call(Method::POST, path, Some(json!({}))).await
            }
            OpenDm => {
                let body = json!({"user_ids": [p.target.id]});
                call(
                    Method::POST,
                    format!("/api/v1/workspaces/{ws}/dms"),
                    Some(body),
                )
                .await
            }
            CreateWorkspace => {
                let body = json!({"name": "elsewhere"});
                call(Method::POST, "/api/v1/workspaces".to_owned(), Some(body)).await
            }
            LeaveOpen => call(Method::POST, format!("{}/leave", channel(fx.open)), None).await,
            LeaveHidden => call(Method::POST, format!("{}/leave", channel(fx.hidden)), None).await,
            LeaveOthersDm => {
                let opened = s
                    .post(
                        &format!("/api/v1/workspaces/{ws}/dms"),
                        &p.owner2.token,
                        json!({"user_ids": [p.target.id]}),
                    )
                    .await
                    .expect_status(StatusCode::CREATED);
                let dm = opened.body["id"].as_i64().expect("the DM's id");
                call(Method::POST, format!("{}/leave", channel(dm)), None).await
            }
            RenamePublic => patch_channel(fx.public, json!({"name": "renamed"})).await,
            AddToPublic => add_to(fx.public, &p.spare).await,
            RemoveFromPublic => {
                let path = format!("{}/members/{}", channel(fx.public), p.target.id);
                call(Method::DELETE, path, None).await
            }
            JoinOpen => call(Method::POST, format!("{}/join", channel(fx.open)), None).await,
            JoinPrivate => call(Method::POST, format!("{}/join", channel(fx.private)), None).await,
            ReadPublic => read(fx.public).await,
            ReadOpen => read(fx.open).await,
            ReadPrivate => read(fx.private).await,
            ReadThread => {
                let path = format!("{}/messages?thread_id={}", channel(fx.public), fx.msg);
                call(Method::GET, path, None).await
            }
            SendPublic => {
                let path = format!("{}/messages", channel(fx.public));
                call(Method::POST, path, Some(json!({"text": "hi"}))).await
            }
            EditOthers | EditOwn => {
                let path = format!("/api/v1/messages/{}", fx.msg);
                call(Method::PATCH, path, Some(json!({"text": "edited"}))).await
            }
            DeleteOthers => {
                call(Method::DELETE, format!("/api/v1/messages/{}", fx.msg), None).await
            }
            EditHidden | DeleteHidden | EditOwnAfterRemoval | DeleteOwnAfterRemoval => {
                let place = match self {
                    EditHidden | DeleteHidden => fx.hidden,
                    _ => fx.private,
                };
                let id = s.send(&p.target, place, "mine").await["id"]
                    .as_i64()
                    .unwrap();
                if matches!(self, EditOwnAfterRemoval | DeleteOwnAfterRemoval) {
                    let path = format!("{}/members/{}", channel(fx.private), p.target.id);
                    s.delete(&path, &p.owner.token)
                        .await
                        .expect_status(StatusCode::NO_CONTENT);
                }
                let path = format!("/api/v1/messages/{id}");
                match self {
                    EditHidden | EditOwnAfterRemoval => {
                        call(Method::PATCH, path, Some(json!({"text": "edited"}))).await
                    }
                    _ => call(Method::DELETE, path, None).await,
                }
            }
            AbortOthers | AbortOthersHidden => {
                let place = match self {
                    AbortOthers => fx.public,
                    _ => fx.hidden,
                };
                let opened = s
                    .post(
                        &format!("{}/messages", channel(place)),
                        &p.target.token,
                        json!({"text": "", "streaming": true}),
                    )
                    .await
                    .expect_status(StatusCode::CREATED);
                let id = opened.body["id"].as_i64().unwrap();
                let path = format!("/api/v1/messages/{id}/abort");
                call(Method::POST, path, Some(json!({}))).await
            }
            CreateChannel => {
                let path = format!("/api/v1/workspaces/{ws}/channels");
                let body = json!({"name": "made", "kind": "public", "member_ids": []});
                call(Method::POST, path, Some(body)).await
            }
            Unpin => {
                let path = format!("/api/v1/messages/{}/pin", fx.msg);
                s.call(Method::PUT, &path, Some(&p.creator.token), None)
                    .await
                    .expect_status(StatusCode::OK);
                call(Method::DELETE, path, None).await
            }
            Unreact => {
                let path = format!("/api/v1/messages/{}/reactions/%F0%9F%91%8D", fx.msg);
                s.call(Method::PUT, &path, Some(&by.token), None).await;
                call(Method::DELETE, path, None).await
            }
            Pin => {
                let path = format!("/api/v1/messages/{}/pin", fx.msg);
                call(Method::PUT, path, None).await
            }
            React => {
                let path = format!("/api/v1/messages/{}/reactions/%F0%9F%91%8D", fx.msg);
                call(Method::PUT, path, None).await
            }
            RegisterCommand => {
                s.add_member(&p.owner, ws, &p.agent, "member").await;
                let body = json!({"name": "deploy", "description": "ship it", "target_user_id": p.agent.id});
                call(
                    Method::POST,
                    format!("/api/v1/workspaces/{ws}/commands"),
                    Some(body),
                )
                .await
            }
            ListCommands => {
                call(
                    Method::GET,
                    format!("/api/v1/workspaces/{ws}/commands"),
                    None,
                )
                .await
            }
            DeleteCommand => {
                let id = register_agent_command(s, &p.owner, ws, &p.agent).await;
                let path = format!("/api/v1/workspaces/{ws}/commands/{id}");
                call(Method::DELETE, path, None).await
            }
            TopicCommandPrivate => {
                let path = format!("{}/messages", channel(fx.private));
                call(
                    Method::POST,
                    path,
                    Some(json!({"text": "/topic by command"})),
                )
                .await
            }
            PolicyCommandPrivate | InviteCommandPrivate | LeaveCommandHidden | MeCommandHidden => {
                let (place, text) = match self {
                    PolicyCommandPrivate => (fx.private, "/policy mentions".to_owned()),
                    InviteCommandPrivate => (fx.private, format!("/invite @{}", p.spare.name)),
                    LeaveCommandHidden => (fx.hidden, "/leave".to_owned()),
                    _ => (fx.hidden, "/me waves".to_owned()),
                };
                let path = format!("{}/messages", channel(place));
                call(Method::POST, path, Some(json!({ "text": text }))).await
            }
            ReceiptAfterLeavingPrivate => {
                s.add_member(&p.owner, ws, &p.agent, "member").await;
                s.add_channel_member(&p.owner, fx.private, &p.agent).await;
                let woke = s
                    .send(&p.target, fx.private, &format!("@{} go", p.agent.name))
                    .await["id"]
                    .as_i64()
                    .unwrap();
                let path = format!("{}/members/{}", channel(fx.private), p.agent.id);
                s.delete(&path, &p.owner.token)
                    .await
                    .expect_status(StatusCode::NO_CONTENT);
                let path = format!("/api/v1/messages/{woke}/receipts");
                call(Method::POST, path, Some(json!({"state": "working"}))).await
            }
            InvokeCommandPrivate | InvokeCommandOfRemovedAgent => {
                register_agent_command(s, &p.owner, ws, &p.agent).await;
                if matches!(self, InvokeCommandOfRemovedAgent) {
                    remove(s, &p.owner, ws, &p.agent)
                        .await
                        .expect_status(StatusCode::NO_CONTENT);
                }
                let path = format!("{}/messages", channel(fx.private));
                call(Method::POST, path, Some(json!({"text": "/deploy prod"}))).await
            }
            InvokeWebhookCommandPrivate | InvokeWebhookCommandOfRemovedRegistrant => {
                let registrant = match self {
                    InvokeWebhookCommandPrivate => &p.server_admin,
                    _ => &p.admin2,
                };
                register_webhook_command(s, registrant, ws, "ci").await;
                if matches!(self, InvokeWebhookCommandOfRemovedRegistrant) {
                    remove(s, &p.owner, ws, &p.admin2)
                        .await
                        .expect_status(StatusCode::NO_CONTENT);
                }
                let path = format!("{}/messages", channel(fx.private));
                call(Method::POST, path, Some(json!({"text": "/ci go"}))).await
            }
            ListedCommandsRun => {
                register_agent_command(s, &p.owner, ws, &p.agent).await;
                register_webhook_command(s, &p.owner, ws, "ok").await;
                register_webhook_command(s, &p.admin2, ws, "ci").await;
                for gone in [&p.agent, &p.admin2] {
                    remove(s, &p.owner, ws, gone)
                        .await
                        .expect_status(StatusCode::NO_CONTENT);
                }
                let listed = s
                    .call(
                        Method::GET,
                        &format!("/api/v1/workspaces/{ws}/commands"),
                        Some(&by.token),
                        None,
                    )
                    .await;
                if !listed.status.is_success() {
                    return listed.status;
                }
                let path = format!("{}/messages", channel(fx.private));
                for command in listed.body.as_array().unwrap() {
                    let text = format!("/{} go", command["name"].as_str().unwrap());
                    let ran = call(Method::POST, path.clone(), Some(json!({ "text": text }))).await;
                    if !ran.is_success() {
                        return ran;
                    }
                }
                listed.status
            }
            Receipt | CancelTurn => {
                s.add_member(&p.owner, ws, &p.agent, "member").await;
                s.add_channel_member(&p.owner, fx.public, &p.agent).await;
                let woke = s
                    .send(&p.target, fx.public, &format!("@{} go", p.agent.name))
                    .await["id"]
                    .as_i64()
                    .unwrap();
                if matches!(self, Receipt) {
                    let path = format!("/api/v1/messages/{woke}/receipts");
                    call(Method::POST, path, Some(json!({"state": "working"}))).await
                } else {
                    let path = format!("/api/v1/messages/{woke}/cancel");
                    call(Method::POST, path, None).await
                }
            }
        }
    }
}

// ---- the table ---------------------------------------------------------------------

use Action::*;
use Actor::*;

const OK: u16 = 200;
const CREATED: u16 = 201;
const ACCEPTED: u16 = 202;
const GONE: u16 = 204;
const DENIED: u16 = 403;
const UNKNOWN: u16 = 404;
const CONFLICT: u16 = 409;
/// Not a status the server sends for the row: the listing left the channel out.
const LEFT_OUT: u16 = 299;
const BAD: u16 = 400;

/// Action → (who, the status they get). docs/protocol.md, "Permissions".
const TABLE: &[(Action, &[(Actor, u16)])] = &[
    // Workspace membership and roles.
    (
        AddMember,
        &[
            (ServerAdmin, CREATED),
            (Owner, CREATED),
            (Admin, CREATED),
            (Member, DENIED),
            (Guest, DENIED),
            (Creator, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        AddOwner,
        &[
            (ServerAdmin, CREATED),
            (Owner, CREATED),
            (Admin, DENIED),
            (Member, DENIED),
        ],
    ),
    (
        AddExisting,
        &[
            (ServerAdmin, CONFLICT),
            (Owner, CONFLICT),
            (Admin, CONFLICT),
            (Member, DENIED),
        ],
    ),
    (
        DemoteMember,
        &[
            (ServerAdmin, OK),
            (Owner, OK),
            (Admin, OK),
            (Member, DENIED),
            (Guest, DENIED),
            (Creator, DENIED),
            (Target, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        PromoteToAdmin,
        &[(Owner, OK), (Admin, OK), (Member, DENIED), (Guest, DENIED)],
    ),
    (
        PromoteToOwner,
        &[
            (ServerAdmin, OK),
            (Owner, OK),
            (Admin, DENIED),
            (Member, DENIED),
        ],
    ),
    (DemoteAdmin, &[(Owner, OK), (Admin, OK), (Member, DENIED)]),
    (
        DemoteOwner,
        &[
            (ServerAdmin, OK),
            (Owner, OK),
            (Admin, DENIED),
            (Member, DENIED),
            (Guest, DENIED),
        ],
    ),
    (
        StepDown,
        &[(Owner, OK), (Admin, OK), (Member, DENIED), (Guest, DENIED)],
    ),
    (
        RaiseSelf,
        &[(Member, DENIED), (Guest, DENIED), (Creator, DENIED)],
    ),
    (
        DemoteLastOwner,
        &[(ServerAdmin, CONFLICT), (Owner, CONFLICT), (Admin, DENIED)],
    ),
    (
        RoleOfNonMember,
        &[(Owner, UNKNOWN), (Admin, UNKNOWN), (Member, DENIED)],
    ),
    (
        RemoveMember,
        &[
            (ServerAdmin, GONE),
            (Owner, GONE),
            (Admin, GONE),
            (Member, DENIED),
            (Guest, DENIED),
            (Creator, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        RemoveAdmin,
        &[(Owner, GONE), (Admin, GONE), (Member, DENIED)],
    ),
    (
        RemoveOwner,
        &[
            (ServerAdmin, GONE),
            (Owner, GONE),
            (Admin, DENIED),
            (Member, DENIED),
            (Guest, DENIED),
        ],
    ),
    (
        RemoveLastOwner,
        &[
            (ServerAdmin, CONFLICT),
            (Owner, CONFLICT),
            (Admin, DENIED),
            (Member, DENIED),
        ],
    ),
    (
        RemoveNonMember,
        &[(Owner, UNKNOWN), (Admin, UNKNOWN), (Member, DENIED)],
    ),
    (
        Leave,
        &[
            (Owner, GONE),
            (Admin, GONE),
            (Member, GONE),
            (Guest, GONE),
            (Creator, GONE),
            (ServerAdmin, UNKNOWN),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        SetObservers,
        &[
            (ServerAdmin, OK),
            (Owner, OK),
            (Admin, OK),
            (Member, DENIED),
            (Guest, DENIED),
        ],
    ),
    (
        ListMembers,
        &[
            (ServerAdmin, OK),
            (Owner, OK),
            (Member, OK),
            (Guest, OK),
            (Outsider, UNKNOWN),
        ],
    ),
    // A DM: any participant sets its topic; its settings are the workspace managers'.
    (
        DmTopic,
        &[
            (ServerAdmin, OK),
            (Owner, OK),
            (Admin, OK),
            (Member, OK),
            (Guest, OK),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        DmSettings,
        &[
            (ServerAdmin, OK),
            (Owner, OK),
            (Admin, OK),
            (Member, DENIED),
            (Guest, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    // Settings and membership of a private channel: its creator and workspace managers.
    (
        RenamePrivate,
        &[
            (ServerAdmin, DENIED),
            (Owner, OK),
            (Admin, OK),
            (Creator, OK),
            (Member, DENIED),
            (Guest, DENIED),
            (Bystander, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        TopicPrivate,
        &[
            (ServerAdmin, DENIED),
            (Owner, OK),
            (Admin, OK),
            (Creator, OK),
            (Member, DENIED),
            (Guest, DENIED),
        ],
    ),
    (
        PolicyPrivate,
        &[
            (ServerAdmin, DENIED),
            (Owner, OK),
            (Admin, OK),
            (Creator, OK),
            (Member, DENIED),
            (Guest, DENIED),
        ],
    ),
    (
        OnDutyPrivate,
        &[
            (ServerAdmin, DENIED),
            (Owner, OK),
            (Admin, OK),
            (Creator, OK),
            (Member, DENIED),
            (Guest, DENIED),
        ],
    ),
    (
        WakeListPrivate,
        &[
            (ServerAdmin, DENIED),
            (Owner, OK),
            (Admin, OK),
            (Creator, OK),
            (Member, DENIED),
            (Guest, DENIED),
        ],
    ),
    (
        AddToPrivate,
        &[
            (ServerAdmin, DENIED),
            (Owner, GONE),
            (Admin, GONE),
            (Creator, GONE),
            (Member, DENIED),
            (Guest, DENIED),
            (Bystander, DENIED),
        ],
    ),
    (
        RemoveFromPrivate,
        &[
            (ServerAdmin, DENIED),
            (Owner, GONE),
            (Admin, GONE),
            (Creator, GONE),
            (Member, DENIED),
            (Guest, DENIED),
        ],
    ),
    // A creator who is now a guest manages nothing, not even their own channel.
    (
        RenameGuestPrivate,
        &[
            (GuestCreator, DENIED),
            (Member, DENIED),
            (ServerAdmin, DENIED),
        ],
    ),
    (
        TopicGuestPrivate,
        &[(GuestCreator, DENIED), (Member, DENIED)],
    ),
    (
        PolicyGuestPrivate,
        &[(GuestCreator, DENIED), (Member, DENIED)],
    ),
    (
        OnDutyGuestPrivate,
        &[(GuestCreator, DENIED), (Member, DENIED)],
    ),
    (
        WakeListGuestPrivate,
        &[(GuestCreator, DENIED), (Member, DENIED)],
    ),
    (
        AddToGuestPrivate,
        &[(GuestCreator, DENIED), (Member, DENIED)],
    ),
    // A private channel stays private from workspace managers who are not in it, server
    // admins included.
    (
        RenameHidden,
        &[(Owner, DENIED), (Admin, DENIED), (ServerAdmin, DENIED)],
    ),
    (
        ReadHidden,
        &[
            (Owner, DENIED),
            (Admin, DENIED),
            (Target, OK),
            (ServerAdmin, DENIED),
        ],
    ),
    // Guests list (and hear of) only their own channels; anyone leaves only a channel
    // they may read, and the answer about one they may not read says nothing of its
    // kind.
    (
        ListChannels,
        &[
            (ServerAdmin, OK),
            (Owner, OK),
            (Admin, OK),
            (Member, OK),
            (Bystander, OK),
            (Guest, LEFT_OUT),
            (GuestCreator, LEFT_OUT),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        LeaveOpen,
        &[
            (Creator, GONE),
            (Member, GONE),
            (Bystander, GONE),
            (Guest, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        LeaveHidden,
        &[
            (ServerAdmin, DENIED),
            (Owner, DENIED),
            (Admin, DENIED),
            (Member, DENIED),
            (Guest, DENIED),
            (Target, GONE),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        LeaveOthersDm,
        &[
            (Owner, DENIED),
            (Member, DENIED),
            (Guest, DENIED),
            (Bystander, DENIED),
            (Target, BAD),
            (Outsider, UNKNOWN),
        ],
    ),
    // Reading the workspace and a channel (the rows above read messages).
    (
        SeePresence,
        &[
            (ServerAdmin, OK),
            (Owner, OK),
            (Member, OK),
            (Guest, OK),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        SeeObservers,
        &[
            (ServerAdmin, OK),
            (Admin, OK),
            (Member, OK),
            (Guest, OK),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        GetOpen,
        &[
            (Member, OK),
            (Bystander, OK),
            (Guest, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        GetHidden,
        &[
            (ServerAdmin, DENIED),
            (Owner, DENIED),
            (Admin, DENIED),
            (Member, DENIED),
            (Target, OK),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        PinsHidden,
        &[
            (ServerAdmin, DENIED),
            (Owner, DENIED),
            (Guest, DENIED),
            (Target, OK),
        ],
    ),
    (
        OnDutyHidden,
        &[(Owner, DENIED), (Admin, DENIED), (Target, OK)],
    ),
    (
        WakeListHidden,
        &[(Owner, DENIED), (Admin, DENIED), (Target, OK)],
    ),
    (
        MarkReadHidden,
        &[
            (ServerAdmin, DENIED),
            (Owner, DENIED),
            (Member, DENIED),
            (Target, OK),
        ],
    ),
    // Streaming messages.
    (
        OpenStreamHidden,
        &[
            (ServerAdmin, DENIED),
            (Owner, DENIED),
            (Admin, DENIED),
            (Target, CREATED),
        ],
    ),
    (
        AppendOthers,
        &[
            (ServerAdmin, DENIED),
            (Owner, DENIED),
            (Admin, DENIED),
            (Creator, DENIED),
            (Member, DENIED),
            (Guest, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        CompleteOthers,
        &[
            (Owner, DENIED),
            (Member, DENIED),
            (Guest, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        AbortOwn,
        &[
            (Owner, DENIED),
            (Member, OK),
            (Guest, OK),
            (Creator, OK),
            (Target, OK),
            (Bystander, DENIED),
        ],
    ),
    // Opening a DM, creating a workspace.
    (
        OpenDm,
        &[
            (ServerAdmin, CREATED),
            (Owner, CREATED),
            (Member, CREATED),
            (Guest, CREATED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        CreateWorkspace,
        &[
            (ServerAdmin, CREATED),
            (Member, CREATED),
            (Guest, CREATED),
            (Outsider, CREATED),
        ],
    ),
    // Public channels.
    (
        RenamePublic,
        &[
            (ServerAdmin, OK),
            (Owner, OK),
            (Admin, OK),
            (Creator, OK),
            (Member, DENIED),
            (Guest, DENIED),
            (Bystander, DENIED),
        ],
    ),
    (
        AddToPublic,
        &[
            (ServerAdmin, GONE),
            (Owner, GONE),
            (Admin, GONE),
            (Creator, GONE),
            (Member, GONE),
            (Guest, DENIED),
            (Bystander, DENIED),
        ],
    ),
    (
        RemoveFromPublic,
        &[
            (Owner, GONE),
            (Admin, GONE),
            (Creator, GONE),
            (Member, DENIED),
            (Guest, DENIED),
        ],
    ),
    (
        JoinOpen,
        &[
            (Member, OK),
            (Bystander, OK),
            (Guest, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (JoinPrivate, &[(Bystander, DENIED), (Guest, OK)]),
    // Reading.
    (
        ReadPublic,
        &[
            (ServerAdmin, OK),
            (Owner, OK),
            (Admin, OK),
            (Member, OK),
            (Guest, OK),
            (Bystander, OK),
            (Outsider, UNKNOWN),
        ],
    ),
    (ReadOpen, &[(Member, OK), (Bystander, OK), (Guest, DENIED)]),
    (
        ReadPrivate,
        &[
            (ServerAdmin, DENIED),
            (Owner, OK),
            (Member, OK),
            (Guest, OK),
            (Bystander, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        ReadThread,
        &[(Bystander, OK), (Guest, OK), (Outsider, UNKNOWN)],
    ),
    // Messages.
    (
        SendPublic,
        &[
            (Member, CREATED),
            (Guest, CREATED),
            (Creator, CREATED),
            (Bystander, DENIED),
            (Owner, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        EditOthers,
        &[
            (ServerAdmin, OK),
            (Owner, OK),
            (Admin, OK),
            (Creator, DENIED),
            (Member, DENIED),
            (Guest, DENIED),
            (Bystander, DENIED),
        ],
    ),
    (
        DeleteOthers,
        &[
            (ServerAdmin, OK),
            (Owner, OK),
            (Admin, OK),
            (Creator, DENIED),
            (Member, DENIED),
            (Guest, DENIED),
        ],
    ),
    (EditOwn, &[(Target, OK)]),
    (
        EditHidden,
        &[
            (ServerAdmin, DENIED),
            (Owner, DENIED),
            (Admin, DENIED),
            (Target, OK),
        ],
    ),
    (
        DeleteHidden,
        &[
            (ServerAdmin, DENIED),
            (Owner, DENIED),
            (Admin, DENIED),
            (Target, OK),
        ],
    ),
    (EditOwnAfterRemoval, &[(Target, DENIED)]),
    (DeleteOwnAfterRemoval, &[(Target, DENIED)]),
    (
        AbortOthers,
        &[
            (ServerAdmin, OK),
            (Owner, OK),
            (Admin, OK),
            (Creator, DENIED),
            (Member, DENIED),
            (Guest, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (AbortOthersHidden, &[(Owner, DENIED), (Admin, DENIED)]),
    (
        CreateChannel,
        &[
            (ServerAdmin, CREATED),
            (Owner, CREATED),
            (Member, CREATED),
            (Guest, DENIED),
            (GuestCreator, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        Unpin,
        &[
            (Member, GONE),
            (Guest, GONE),
            (Bystander, DENIED),
            (Owner, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        Unreact,
        &[
            (Member, OK),
            (Bystander, OK),
            (Owner, OK),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        Pin,
        &[
            (Member, OK),
            (Guest, OK),
            (Creator, OK),
            (Bystander, DENIED),
            (Owner, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        React,
        &[
            (Member, OK),
            (Guest, OK),
            (Bystander, OK),
            (Owner, OK),
            (Outsider, UNKNOWN),
        ],
    ),
];

/// The last rows: turns and receipts (issue 19).
const TURN_ROWS: &[(Action, &[(Actor, u16)])] = &[
    (
        Receipt,
        &[
            (Agent, OK),
            (Target, DENIED),
            (Owner, DENIED),
            (Member, DENIED),
            (Guest, DENIED),
            (Bystander, DENIED),
            (ServerAdmin, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        CancelTurn,
        &[
            (Target, OK),
            (Creator, OK),
            (Owner, OK),
            (Admin, OK),
            (Member, DENIED),
            (Guest, DENIED),
            (Bystander, DENIED),
            (Agent, DENIED),
            (ServerAdmin, OK),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        ReceiptAfterLeavingPrivate,
        &[
            (Agent, UNKNOWN),
            (Target, DENIED),
            (Bystander, UNKNOWN),
            (Outsider, UNKNOWN),
        ],
    ),
];

/// Slash commands (issue 21).
const COMMAND_ROWS: &[(Action, &[(Actor, u16)])] = &[
    (
        RegisterCommand,
        &[
            (ServerAdmin, CREATED),
            (Owner, CREATED),
            (Admin, CREATED),
            (Agent, CREATED),
            (Member, DENIED),
            (Guest, DENIED),
            (Creator, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        ListCommands,
        &[(Owner, OK), (Member, OK), (Guest, OK), (Outsider, UNKNOWN)],
    ),
    (
        DeleteCommand,
        &[
            (Owner, GONE),
            (Admin, GONE),
            (ServerAdmin, GONE),
            (Member, DENIED),
            (Guest, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        TopicCommandPrivate,
        &[
            (Owner, OK),
            (Admin, OK),
            (Creator, OK),
            (Member, DENIED),
            (Guest, DENIED),
            (Bystander, DENIED),
            (ServerAdmin, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        PolicyCommandPrivate,
        &[
            (ServerAdmin, DENIED),
            (Owner, OK),
            (Admin, OK),
            (Creator, OK),
            (Member, DENIED),
            (Guest, DENIED),
        ],
    ),
    (
        InviteCommandPrivate,
        &[
            (ServerAdmin, DENIED),
            (Owner, OK),
            (Admin, OK),
            (Creator, OK),
            (Member, DENIED),
            (Guest, DENIED),
            (Bystander, DENIED),
        ],
    ),
    (
        LeaveCommandHidden,
        &[
            (ServerAdmin, DENIED),
            (Owner, DENIED),
            (Admin, DENIED),
            (Member, DENIED),
            (Target, OK),
        ],
    ),
    (
        MeCommandHidden,
        &[
            (ServerAdmin, DENIED),
            (Owner, DENIED),
            (Member, DENIED),
            (Target, OK),
        ],
    ),
    (
        InvokeCommandPrivate,
        &[
            (Owner, OK),
            (Member, OK),
            (Guest, OK),
            (Target, OK),
            (Bystander, DENIED),
            (ServerAdmin, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        InvokeCommandOfRemovedAgent,
        &[
            (Owner, UNKNOWN),
            (Member, UNKNOWN),
            (Guest, UNKNOWN),
            (Target, UNKNOWN),
            (Bystander, DENIED),
            (ServerAdmin, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        InvokeWebhookCommandPrivate,
        &[
            (Owner, OK),
            (Member, OK),
            (Guest, OK),
            (Target, OK),
            (Bystander, DENIED),
            (ServerAdmin, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        InvokeWebhookCommandOfRemovedRegistrant,
        &[
            (Owner, UNKNOWN),
            (Admin, UNKNOWN),
            (Member, UNKNOWN),
            (Guest, UNKNOWN),
            (Target, UNKNOWN),
            (Bystander, DENIED),
            (ServerAdmin, DENIED),
            (Outsider, UNKNOWN),
        ],
    ),
    (
        ListedCommandsRun,
        &[
            (Owner, OK),
            (Admin, OK),
            (Member, OK),
            (Guest, OK),
            (Target, OK),
            (Outsider, UNKNOWN),
        ],
    ),
];

/// Server rows: no workspace role counts, only being a server admin.
const SERVER_ROWS: &[(Action, &[(Actor, u16)])] = &[
    // The server's administration is the server admin's alone (a user's own tokens and
    // an agent's own deliveries aside).
    (
        CreateUser,
        &[
            (ServerAdmin, CREATED),
            (Owner, DENIED),
            (Member, DENIED),
            (Agent, DENIED),
            (Outsider, DENIED),
        ],
    ),
    (
        ListUsers,
        &[(ServerAdmin, OK), (Owner, DENIED), (Guest, DENIED)],
    ),
    (
        DeactivateTarget,
        &[(Owner, DENIED), (Admin, DENIED), (Member, DENIED)],
    ),
    (
        PublishTopic,
        &[
            (ServerAdmin, ACCEPTED),
            (Owner, DENIED),
            (Member, DENIED),
            (Agent, DENIED),
        ],
    ),
    (
        TargetsTokens,
        &[
            (ServerAdmin, OK),
            (Target, OK),
            (Owner, DENIED),
            (Admin, DENIED),
            (Member, DENIED),
        ],
    ),
    (ListServerKeys, &[(ServerAdmin, OK), (Owner, DENIED)]),
    (RealtimeStats, &[(ServerAdmin, OK), (Owner, DENIED)]),
    (ListNamespaces, &[(ServerAdmin, OK), (Owner, DENIED)]),
    (
        AgentsDeliveries,
        &[
            (ServerAdmin, OK),
            (Agent, OK),
            (Owner, DENIED),
            (Member, DENIED),
        ],
    ),
    (
        SignInLink,
        &[
            (ServerAdmin, CREATED),
            (Owner, DENIED),
            (Admin, DENIED),
            (Member, DENIED),
            (Guest, DENIED),
            (Target, DENIED),
            (Agent, DENIED),
            (Outsider, DENIED),
        ],
    ),
    (
        SignInLinkForSelf,
        &[(ServerAdmin, CREATED), (Owner, DENIED), (Member, DENIED)],
    ),
    (
        ListSignInLinks,
        &[
            (ServerAdmin, OK),
            (Owner, DENIED),
            (Target, DENIED),
            (Member, DENIED),
        ],
    ),
    (
        RevokeSignInLink,
        &[
            (ServerAdmin, UNKNOWN),
            (Owner, DENIED),
            (Target, DENIED),
            (Member, DENIED),
        ],
    ),
    (
        RevokeProxySessions,
        &[
            (ServerAdmin, UNKNOWN),
            (Owner, DENIED),
            (Member, DENIED),
            (Agent, DENIED),
            (Outsider, DENIED),
        ],
    ),
    // Everyone signs out their own token: 204.
    (
        SignOut,
        &[
            (ServerAdmin, GONE),
            (Owner, GONE),
            (Member, GONE),
            (Guest, GONE),
            (Agent, GONE),
            (Outsider, GONE),
        ],
    ),
    // Another user's MCP session is answered as one that does not exist.
    (
        UseTargetsMcpSession,
        &[
            (Target, ACCEPTED),
            (ServerAdmin, UNKNOWN),
            (Owner, UNKNOWN),
            (Member, UNKNOWN),
            (Outsider, UNKNOWN),
            (Agent, UNKNOWN),
        ],
    ),
];

/// Rows run this many at a time (each on its own workspace).
const PARALLEL: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_role_gets_what_the_permission_table_says() {
    // Several hundred calls from a few tokens: no per-user rate limit here; a
    // workspace per row, all of one owner's.
    let s = TestServer::start_with(|c| {
        c.http_per_sec = 0;
        c.max_workspaces_per_user = 10_000;
    })
    .await;
    let p = People::create(&s).await;
    let rows: Vec<(Action, Actor, u16)> = TABLE
        .iter()
        .chain(TURN_ROWS)
        .chain(COMMAND_ROWS)
        .chain(SERVER_ROWS)
        .flat_map(|(action, cells)| cells.iter().map(|(who, code)| (*action, *who, *code)))
        .collect();
    let (s, p) = (&s, &p);
    let results: Vec<_> = futures_util::stream::iter(rows)
        .map(|(action, actor, expected)| async move {
            let fx = fixture(s, p).await;
            let got = action.run(s, p, &fx, p.of(actor)).await;
            (action, actor, expected, got)
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut wrong = String::new();
    for (action, actor, expected, got) in &results {
        if got.as_u16() != *expected {
            writeln!(
                wrong,
                "{action:?} by {actor:?}: expected {expected}, got {got}"
            )
            .unwrap();
        }
    }
    assert!(
        wrong.is_empty(),
        "rows that disagree with the table:\n{wrong}"
    );
}

// ---- subscribing -------------------------------------------------------------------

/// The answer to a `subscribe`: `ack`, or the error's code.
async fn subscribe_answer(client: &mut WsClient, scope: &str) -> String {
    let reply = client.subscribe(scope).await;
    if reply["op"] == "ack" {
        "ack".into()
    } else {
        reply["code"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn subscribing_follows_the_reading_rules() {
    let s = TestServer::start().await;
    let p = People::create(&s).await;
    let fx = fixture(&s, &p).await;
    let scopes = |kind: &str| -> String {
        match kind {
            "workspace" => format!("workspace:{}", fx.ws),
            "pub" => format!("channel:{}", fx.public),
            "open" => format!("channel:{}", fx.open),
            "priv" => format!("channel:{}", fx.private),
            "hidden" => format!("channel:{}", fx.hidden),
            "thread-open" => format!("thread:{}", fx.open_msg),
            "thread-priv" => format!("thread:{}", fx.private_msg),
            "topic" => "topic:news".into(),
            "other-user" => format!("user:{}", p.target.id),
            // Another spelling of a scope names nothing (events go to `channel:7`).
            "pub-as-0n" => format!("channel:0{}", fx.public),
            "workspace-as-0n" => format!("workspace:0{}", fx.ws),
            "thread-as-0n" => format!("thread:0{}", fx.open_msg),
            other => panic!("{other}"),
        }
    };
    let table: &[(Actor, &[(&str, &str)])] = &[
        (
            ServerAdmin,
            &[
                ("workspace", "ack"),
                ("open", "ack"),
                ("pub", "ack"),
                ("hidden", "forbidden"),
                ("thread-priv", "forbidden"),
            ],
        ),
        (
            Owner,
            &[
                ("workspace", "ack"),
                ("pub", "ack"),
                ("open", "ack"),
                ("priv", "ack"),
                ("hidden", "forbidden"),
                ("thread-open", "ack"),
                ("topic", "ack"),
                ("other-user", "forbidden"),
                ("pub-as-0n", "not_found"),
                ("workspace-as-0n", "not_found"),
                ("thread-as-0n", "not_found"),
            ],
        ),
        (Admin, &[("hidden", "forbidden"), ("open", "ack")]),
        (
            Member,
            &[
                ("workspace", "ack"),
                ("open", "ack"),
                ("priv", "ack"),
                ("hidden", "forbidden"),
                ("thread-open", "ack"),
                ("thread-priv", "ack"),
            ],
        ),
        (
            Guest,
            &[
                ("workspace", "ack"),
                ("pub", "ack"),
                ("priv", "ack"),
                ("open", "forbidden"),
                ("thread-open", "forbidden"),
                ("thread-priv", "ack"),
                ("topic", "ack"),
            ],
        ),
        (
            Bystander,
            &[
                ("pub", "ack"),
                ("open", "ack"),
                ("priv", "forbidden"),
                ("thread-open", "ack"),
                ("thread-priv", "forbidden"),
            ],
        ),
        (
            Outsider,
            &[
                ("workspace", "not_found"),
                ("pub", "not_found"),
                ("priv", "not_found"),
                ("thread-open", "not_found"),
                ("topic", "ack"),
                ("other-user", "forbidden"),
            ],
        ),
    ];
    let mut wrong = String::new();
    for (actor, cells) in table {
        let mut client = s.connect(&p.of(*actor).token).await;
        for (kind, expected) in *cells {
            let scope = scopes(kind);
            let got = subscribe_answer(&mut client, &scope).await;
            if got != *expected {
                writeln!(
                    wrong,
                    "{actor:?} subscribing {kind} ({scope}): expected {expected}, got {got}"
                )
                .unwrap();
            }
        }
    }
    assert!(wrong.is_empty(), "subscriptions that disagree:\n{wrong}");
}

/// Gateway mode: with namespaces declared, a topic is read (and published by a client)
/// by whom its namespace names (docs/protocol.md, "Namespaces"; anonymous connections
/// are in tests/gateway.rs).
#[tokio::test]
async fn namespaced_topics_follow_their_access() {
    let access = |name: &str, pattern: &str, read: &str, publish: &str| chorus_api::Namespace {
        name: name.into(),
        pattern: pattern.into(),
        read: read.into(),
        publish: publish.into(),
        schema: None,
        retention_events: None,
        retention_secs: None,
        // Who may read a topic's presence is who may subscribe (checked below too).
        presence: true,
        join_leave: false,
    };
    let s = TestServer::start_with(|c| {
        c.namespaces = vec![
            access("news", "topic:news", "public", "server"),
            access("feed", "topic:feed.{id}", "authenticated", "authenticated"),
            access(
                "ops",
                "topic:ws.{workspace_id}.ops",
                "role:admin",
                "role:admin",
            ),
            access(
                "crew",
                "topic:ws.{workspace_id}.crew",
                "role:member",
                "role:member",
            ),
            access("inbox", "topic:inbox.{user_id}", "user", "user"),
        ]
    })
    .await;
    let p = People::create(&s).await;
    let fx = fixture(&s, &p).await;
    let scope = |kind: &str, actor: Actor| -> String {
        match kind {
            "news" => "topic:news".into(),
            "feed" => "topic:feed.1".into(),
            "ops" => format!("topic:ws.{}.ops", fx.ws),
            "crew" => format!("topic:ws.{}.crew", fx.ws),
            // Another spelling of the workspace's id is a topic of its own, nobody's.
            "ops-as-0n" => format!("topic:ws.0{}.ops", fx.ws),
            "crew-as-0n" => format!("topic:ws.0{}.crew", fx.ws),
            "own-inbox" => format!("topic:inbox.{}", p.of(actor).id),
            "other-inbox" => format!("topic:inbox.{}", p.target.id),
            "undeclared" => "topic:undeclared".into(),
            other => panic!("{other}"),
        }
    };
    // (actor, kind, subscribe, client publish)
    let table: &[(Actor, &str, &str, &str)] = &[
        (ServerAdmin, "ops", "ack", "ack"),
        (Owner, "ops", "ack", "ack"),
        (Admin, "ops", "ack", "ack"),
        (Member, "ops", "forbidden", "forbidden"),
        (Guest, "ops", "forbidden", "forbidden"),
        (Outsider, "ops", "forbidden", "forbidden"),
        (Member, "crew", "ack", "ack"),
        (Guest, "crew", "forbidden", "forbidden"),
        (Outsider, "crew", "forbidden", "forbidden"),
        (ServerAdmin, "ops-as-0n", "forbidden", "forbidden"),
        (Owner, "ops-as-0n", "forbidden", "forbidden"),
        (Admin, "ops-as-0n", "forbidden", "forbidden"),
        (Member, "crew-as-0n", "forbidden", "forbidden"),
        (Guest, "news", "ack", "forbidden"),
        (Outsider, "feed", "ack", "ack"),
        (Member, "own-inbox", "ack", "ack"),
        (Member, "other-inbox", "forbidden", "forbidden"),
        (ServerAdmin, "other-inbox", "forbidden", "forbidden"),
        (Owner, "undeclared", "not_found", "not_found"),
    ];
    let mut wrong = String::new();
    for (actor, kind, read, publish) in table {
        let mut client = s.connect(&p.of(*actor).token).await;
        let name = scope(kind, *actor);
        let got = subscribe_answer(&mut client, &name).await;
        if got != *read {
            writeln!(
                wrong,
                "{actor:?} subscribing {kind} ({name}): expected {read}, got {got}"
            )
            .unwrap();
        }
        let reply = client
            .request(json!({"op": "publish", "scope": name, "type": "t", "data": {}}))
            .await;
        let got = if reply["op"] == "ack" {
            "ack"
        } else {
            reply["code"].as_str().unwrap()
        };
        if got != *publish {
            writeln!(
                wrong,
                "{actor:?} publishing to {kind} ({name}): expected {publish}, got {got}"
            )
            .unwrap();
        }
        // The topic's presence over HTTP: the same rule as subscribing.
        let status = s
            .get(
                &format!("/api/v1/scopes/{}/presence", name.replace(':', "%3A")),
                &p.of(*actor).token,
            )
            .await
            .status;
        let expected = match *read {
            "ack" => StatusCode::OK,
            "forbidden" => StatusCode::FORBIDDEN,
            _ => StatusCode::NOT_FOUND,
        };
        if status != expected {
            writeln!(
                wrong,
                "{actor:?} reading the presence of {kind} ({name}): expected {expected}, got {status}"
            )
            .unwrap();
        }
    }
    assert!(wrong.is_empty(), "namespace rules that disagree:\n{wrong}");
}

/// Gateway mode, access `proxy`: the application decides (tests/proxies.rs has the
/// proxies themselves). Here it lets owners and members read, and guests publish; a
/// server admin is nobody special to it.
#[tokio::test]
async fn proxied_topics_follow_the_applications_answer() {
    use common::app::{App, Reply, SECRET};
    let app = App::start(|proxy, body| {
        let name = body["user"]["name"].as_str().unwrap_or("");
        let allow = match proxy {
            "subscribe" => name.starts_with("owner") || name.starts_with("member"),
            _ => name.starts_with("guest"),
        };
        Reply::Json(json!({ "allow": allow }))
    })
    .await;
    let s = TestServer::start_with(|c| {
        c.proxy = chorus_server::config::ProxyConfig {
            secret: Some(SECRET.into()),
            subscribe: Some(app.endpoint("subscribe")),
            publish: Some(app.endpoint("publish")),
            ..Default::default()
        };
        c.namespaces = vec![chorus_api::Namespace {
            name: "proxied".into(),
            pattern: "topic:proxied.{id}".into(),
            read: "proxy".into(),
            publish: "proxy".into(),
            schema: None,
            retention_events: None,
            retention_secs: None,
            presence: false,
            join_leave: false,
        }];
    })
    .await;
    let p = People::create(&s).await;
    // (actor, subscribe, client publish)
    let table: &[(Actor, &str, &str)] = &[
        (ServerAdmin, "forbidden", "forbidden"),
        (Owner, "ack", "forbidden"),
        (Member, "ack", "forbidden"),
        (Guest, "forbidden", "ack"),
        (Outsider, "forbidden", "forbidden"),
    ];
    let mut wrong = String::new();
    for (actor, read, publish) in table {
        let mut client = s.connect(&p.of(*actor).token).await;
        let got = subscribe_answer(&mut client, "topic:proxied.1").await;
        if got != *read {
            writeln!(wrong, "{actor:?} subscribing: expected {read}, got {got}").unwrap();
        }
        let reply = client
            .request(json!({"op": "publish", "scope": "topic:proxied.1", "type": "t", "data": {}}))
            .await;
        let got = if reply["op"] == "ack" {
            "ack"
        } else {
            reply["code"].as_str().unwrap()
        };
        if got != *publish {
            writeln!(wrong, "{actor:?} publishing: expected {publish}, got {got}").unwrap();
        }
    }
    assert!(wrong.is_empty(), "proxied rules that disagree:\n{wrong}");
}

/// Gateway mode, `role:<name>` from the credential: a JWT's roles claim (here the
/// default, `roles`) gives its connection roles that a `role:<name>` namespace admits
/// by exact name, whatever the user's workspace role; a workspace role's name admits
/// its members too (docs/protocol.md, "Namespaces"; the connect proxy's roles are in
/// tests/credential_roles.rs).
#[tokio::test]
async fn credential_roles_open_role_namespaces() {
    const SECRET: &str = "permission-table-jwt-secret-32-bytes";
    let access = |name: &str, pattern: &str, rule: &str| chorus_api::Namespace {
        name: name.into(),
        pattern: pattern.into(),
        read: rule.into(),
        publish: rule.into(),
        schema: None,
        retention_events: None,
        retention_secs: None,
        presence: false,
        join_leave: false,
    };
    let s = TestServer::start_with(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.jwt_admins = true; // the server admin's row signs in with a JWT too
        c.namespaces = vec![
            access("support", "topic:support.{id}", "role:support"),
            access("ops", "topic:ws.{workspace_id}.ops", "role:admin"),
        ]
    })
    .await;
    let p = People::create(&s).await;
    let fx = fixture(&s, &p).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let jwt = |actor: Actor, roles: &[&str]| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub": p.of(actor).id.to_string(), "exp": exp, "roles": roles}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let ops = format!("topic:ws.{}.ops", fx.ws);
    // (actor, the JWT's roles, scope, subscribe, client publish)
    let table: &[(Actor, &[&str], &str, &str, &str)] = &[
        (Member, &["support"], "topic:support.1", "ack", "ack"),
        (
            Outsider,
            &["support", "billing"],
            "topic:support.1",
            "ack",
            "ack",
        ),
        (Member, &[], "topic:support.1", "forbidden", "forbidden"),
        (
            Member,
            &["Support"],
            "topic:support.1",
            "forbidden",
            "forbidden",
        ),
        (Owner, &[], "topic:support.1", "forbidden", "forbidden"),
        (
            ServerAdmin,
            &[],
            "topic:support.1",
            "forbidden",
            "forbidden",
        ),
        (Member, &["admin"], &ops, "ack", "ack"),
        (Outsider, &["admin"], &ops, "ack", "ack"),
        (Member, &["owner"], &ops, "forbidden", "forbidden"),
        (Guest, &["support"], &ops, "forbidden", "forbidden"),
        (Admin, &[], &ops, "ack", "ack"),
    ];
    let mut wrong = String::new();
    for (actor, roles, scope, read, publish) in table {
        let token = jwt(*actor, roles);
        let mut client = s.connect(&token).await;
        let got = subscribe_answer(&mut client, scope).await;
        if got != *read {
            writeln!(
                wrong,
                "{actor:?} with {roles:?} subscribing {scope}: expected {read}, got {got}"
            )
            .unwrap();
        }
        let reply = client
            .request(json!({"op": "publish", "scope": scope, "type": "t", "data": {}}))
            .await;
        let got = if reply["op"] == "ack" {
            "ack"
        } else {
            reply["code"].as_str().unwrap()
        };
        if got != *publish {
            writeln!(
                wrong,
                "{actor:?} with {roles:?} publishing to {scope}: expected {publish}, got {got}"
            )
            .unwrap();
        }
        // The HTTP catch-up takes the same credential's roles: past the check, the
        // answer is the events (`200`) or `410` (position 0 is not kept here).
        let status = s
            .get(&format!("/api/v1/scopes/{scope}/events?after=0"), &token)
            .await
            .status;
        let expected = if *read == "ack" { "200 or 410" } else { "403" };
        let passed = status == StatusCode::OK || status == StatusCode::GONE;
        if passed != (*read == "ack") || (!passed && status != StatusCode::FORBIDDEN) {
            writeln!(
                wrong,
                "{actor:?} with {roles:?} reading {scope} over HTTP: expected {expected}, got {status}"
            )
            .unwrap();
        }
    }
    assert!(wrong.is_empty(), "credential roles that disagree:\n{wrong}");
}

// ---- events ------------------------------------------------------------------------

#[tokio::test]
async fn a_role_change_is_announced_to_the_workspace_and_the_member() {
    let s = TestServer::start().await;
    let p = People::create(&s).await;
    let fx = fixture(&s, &p).await;
    let mut target = s.connect(&p.target.token).await;
    let mut member = s.connect(&p.member.token).await;

    let changed = s
        .set_role(&p.owner, fx.ws, &p.target, "admin")
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(changed.body["role"], "admin");
    assert_eq!(changed.body["user"]["id"], p.target.id);
    let data = json!({"workspace_id": fx.ws, "user_id": p.target.id, "role": "admin"});

    let seen = member.expect_event("member.role_changed").await;
    assert_eq!(seen["scope"], format!("workspace:{}", fx.ws));
    assert_eq!(seen["data"], data);
    // The member hears it on their own scope first (it re-checks their
    // subscriptions), then on the workspace's.
    let own = target.expect_event("member.role_changed").await;
    assert_eq!(own["scope"], format!("user:{}", p.target.id));
    assert_eq!(own["data"], data);
    let on_workspace = target.expect_event("member.role_changed").await;
    assert_eq!(on_workspace["scope"], format!("workspace:{}", fx.ws));

    // The same role again changes nothing and announces nothing.
    s.set_role(&p.owner, fx.ws, &p.target, "admin")
        .await
        .expect_status(StatusCode::OK);
    let frames = member.barrier().await;
    assert!(frames.is_empty(), "nothing new: {frames:?}");

    // The role is what the API now says.
    let members = s
        .get(
            &format!("/api/v1/workspaces/{}/members", fx.ws),
            &p.member.token,
        )
        .await
        .expect_status(StatusCode::OK);
    let role = members
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"]["id"] == p.target.id);
    assert_eq!(role.unwrap()["role"], "admin");
}

#[tokio::test]
async fn a_removed_member_loses_the_workspace_its_channels_and_dms_at_once() {
    let s = TestServer::start().await;
    let p = People::create(&s).await;
    let fx = fixture(&s, &p).await;
    // A DM of target and member, and a workspace target keeps (for the barrier).
    let dm = s
        .post(
            &format!("/api/v1/workspaces/{}/dms", fx.ws),
            &p.member.token,
            json!({ "user_ids": [p.target.id] }),
        )
        .await
        .expect_status(StatusCode::CREATED)
        .body["id"]
        .as_i64()
        .unwrap();
    let other_ws = s.create_workspace(&p.bystander, &unique("other")).await;
    s.add_member(&p.bystander, other_ws, &p.target, "member")
        .await;
    let elsewhere = s
        .create_channel(&p.bystander, other_ws, "elsewhere", "public", &[&p.target])
        .await;
    let kept = s.send(&p.target, fx.private, "said before leaving").await;

    let mut target = s.connect(&p.target.token).await;
    let scopes: Vec<String> = serde_json::from_value(target.hello["scopes"].clone()).unwrap();
    for ch in [fx.public, fx.private, fx.guest_private, fx.hidden, dm] {
        assert!(scopes.contains(&format!("channel:{ch}")), "{scopes:?}");
    }
    // Opened without membership: a public channel and a thread panel of it.
    let (open, open_thread) = (
        format!("channel:{}", fx.open),
        format!("thread:{}", fx.open_msg),
    );
    for scope in [&open, &open_thread] {
        assert_eq!(target.subscribe(scope).await["op"], "ack");
    }
    let mut member = s.connect(&p.member.token).await;

    remove(&s, &p.admin, fx.ws, &p.target)
        .await
        .expect_status(StatusCode::NO_CONTENT);

    // After the removal, the workspace goes on: messages in its channels, a reply in
    // the thread, a channel update, a new member. Then a barrier: a message in a
    // channel the removed user still reads, after which they would have received
    // anything of the workspace that reached them.
    for ch in [fx.public, fx.private, dm] {
        s.send(&p.member, ch, "after the removal").await;
    }
    s.send(&p.creator, fx.open, "after the removal").await;
    s.post(
        &format!("/api/v1/channels/{}/messages", fx.open),
        &p.creator.token,
        json!({ "text": "a reply", "thread_id": fx.open_msg }),
    )
    .await
    .expect_status(StatusCode::CREATED);
    s.patch(
        &format!("/api/v1/channels/{}", fx.public),
        &p.owner.token,
        json!({ "topic": "after" }),
    )
    .await
    .expect_status(StatusCode::OK);
    s.add_member(&p.owner, fx.ws, &p.outsider, "member").await;
    let barrier = s.send(&p.bystander, elsewhere, "barrier").await;
    let mut frames = Vec::new();
    loop {
        let frame = target.recv_json().await;
        let done = frame["type"] == "message.created" && frame["data"] == barrier;
        frames.push(frame);
        if done {
            break;
        }
    }
    let own = format!("user:{}", p.target.id);
    let of_type =
        |kind: &str| -> Vec<&Value> { frames.iter().filter(|f| f["type"] == kind).collect() };

    // `workspace.left` on their scope, then `channel.left` for each channel of the
    // workspace they were in (DMs included).
    let left = of_type("workspace.left");
    assert_eq!(left.len(), 1, "{frames:?}");
    assert_eq!(left[0]["scope"], own.as_str());
    assert_eq!(left[0]["data"], json!({ "workspace_id": fx.ws }));
    let mut channels_left: Vec<i64> = of_type("channel.left")
        .iter()
        .map(|f| {
            assert_eq!(f["scope"], own.as_str());
            assert_eq!(f["data"]["user_id"], p.target.id);
            f["data"]["channel_id"].as_i64().unwrap()
        })
        .collect();
    channels_left.sort_unstable();
    let mut expected = vec![fx.public, fx.private, fx.guest_private, fx.hidden, dm];
    expected.sort_unstable();
    assert_eq!(channels_left, expected);
    // What they opened without membership is taken away too (re-checked).
    let mut revoked: Vec<(String, String)> = of_type("subscription.revoked")
        .iter()
        .map(|f| {
            assert_eq!(f["scope"], f["data"]["scope"]);
            (
                f["data"]["scope"].as_str().unwrap().to_owned(),
                f["data"]["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    revoked.sort();
    assert_eq!(
        revoked,
        vec![
            (open.clone(), "workspace_left".to_owned()),
            (open_thread.clone(), "workspace_left".to_owned()),
        ]
    );
    // And nothing of the workspace reached them: every other frame is about a scope
    // they still read.
    let still_read = [
        own.clone(),
        format!("workspace:{other_ws}"),
        format!("channel:{elsewhere}"),
    ];
    for frame in &frames {
        let scope = frame["scope"].as_str().unwrap_or_default();
        assert!(
            frame["type"] == "subscription.revoked" || still_read.iter().any(|s| s == scope),
            "an event of the workspace left behind reached them: {frame}"
        );
    }

    // The others: `member.left` on each channel they share with the removed user, and
    // on the workspace.
    let mut heard = Vec::new();
    for _ in 0..4 {
        let frame = member.expect_event("member.left").await;
        assert_eq!(frame["data"]["user_id"], p.target.id);
        heard.push(frame["scope"].as_str().unwrap().to_owned());
    }
    let mut want = vec![
        format!("channel:{}", fx.public),
        format!("channel:{}", fx.private),
        format!("channel:{}", fx.guest_private),
        format!("channel:{dm}"),
    ];
    want.sort();
    heard.sort();
    assert_eq!(heard, want);
    let frame = member.expect_event("member.left").await;
    assert_eq!(frame["scope"], format!("workspace:{}", fx.ws));
    assert_eq!(
        frame["data"],
        json!({ "workspace_id": fx.ws, "user_id": p.target.id })
    );

    // Over HTTP the workspace is gone for them; what they wrote stays.
    s.get(
        &format!("/api/v1/channels/{}/messages", fx.private),
        &p.target.token,
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
    s.get(&format!("/api/v1/channels/{dm}/messages"), &p.target.token)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let history = s.history(&p.member, fx.private, "limit=50").await;
    assert!(history.contains(&kept), "their message stays");
    // A new connection starts without any of it.
    let fresh = s.connect(&p.target.token).await;
    let mut scopes: Vec<String> = serde_json::from_value(fresh.hello["scopes"].clone()).unwrap();
    scopes.sort();
    let mut expected = still_read.to_vec();
    expected.sort();
    assert_eq!(scopes, expected);

    // Added back, they are in no channel; the DM comes back when it is opened again.
    s.add_member(&p.owner, fx.ws, &p.target, "member").await;
    let reopened = s
        .post(
            &format!("/api/v1/workspaces/{}/dms", fx.ws),
            &p.member.token,
            json!({ "user_ids": [p.target.id] }),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(reopened.body["id"], dm);
    let history = s.history(&p.target, dm, "limit=50").await;
    assert_eq!(history.len(), 1, "the DM's history is theirs again");
}

#[tokio::test]
async fn leaving_is_removing_oneself() {
    let s = TestServer::start().await;
    let p = People::create(&s).await;
    let fx = fixture(&s, &p).await;
    let mut guest = s.connect(&p.guest.token).await;
    let mut member = s.connect(&p.member.token).await;

    remove(&s, &p.guest, fx.ws, &p.guest)
        .await
        .expect_status(StatusCode::NO_CONTENT);
    let left = guest.expect_event("workspace.left").await;
    assert_eq!(left["data"]["workspace_id"], fx.ws);
    let frame = member.expect_event("member.left").await;
    assert_eq!(frame["data"]["user_id"], p.guest.id);

    // The guest's channels go on without them (ping barrier: queued behind every
    // event the guest's connection was sent).
    s.send(&p.member, fx.public, "still here").await;
    assert_eq!(
        member.expect_event("message.created").await["data"]["text"],
        "still here"
    );
    let frames = guest.barrier().await;
    let leaked: Vec<&Value> = frames
        .iter()
        .filter(|f| f["scope"] != format!("user:{}", p.guest.id))
        .collect();
    assert!(leaked.is_empty(), "events after leaving: {leaked:?}");
    let workspaces = s
        .get("/api/v1/workspaces", &p.guest.token)
        .await
        .expect_status(StatusCode::OK);
    assert!(
        !workspaces
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["workspace"]["id"] == fx.ws)
    );
}

#[tokio::test]
async fn a_member_made_guest_loses_the_public_channels_they_had_not_joined() {
    let s = TestServer::start().await;
    let p = People::create(&s).await;
    let fx = fixture(&s, &p).await;
    // The bystander reads `open` and a thread of it without joining, and is in `priv`.
    s.add_channel_member(&p.creator, fx.private, &p.bystander)
        .await;
    let mut bystander = s.connect(&p.bystander.token).await;
    let (open, open_thread, private) = (
        format!("channel:{}", fx.open),
        format!("thread:{}", fx.open_msg),
        format!("channel:{}", fx.private),
    );
    for scope in [&open, &open_thread] {
        assert_eq!(bystander.subscribe(scope).await["op"], "ack");
    }

    s.set_role(&p.owner, fx.ws, &p.bystander, "guest")
        .await
        .expect_status(StatusCode::OK);
    s.send(&p.creator, fx.open, "guests do not see this").await;
    s.post(
        &format!("/api/v1/channels/{}/messages", fx.open),
        &p.creator.token,
        json!({ "text": "nor this", "thread_id": fx.open_msg }),
    )
    .await
    .expect_status(StatusCode::CREATED);
    let kept = s
        .send(&p.creator, fx.private, "but this, they are in it")
        .await;

    // Ping barrier: every frame queued for the connection before it is read first.
    let frames = bystander.barrier().await;
    let changed: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "member.role_changed")
        .collect();
    assert_eq!(
        changed.len(),
        2,
        "own scope and workspace scope: {frames:?}"
    );
    assert_eq!(changed[0]["scope"], format!("user:{}", p.bystander.id));
    assert_eq!(changed[0]["data"]["role"], "guest");
    let mut revoked: Vec<(&str, &str)> = frames
        .iter()
        .filter(|f| f["type"] == "subscription.revoked")
        .map(|f| {
            (
                f["data"]["scope"].as_str().unwrap(),
                f["data"]["reason"].as_str().unwrap(),
            )
        })
        .collect();
    revoked.sort();
    assert_eq!(
        revoked,
        vec![
            (open.as_str(), "role_changed"),
            (open_thread.as_str(), "role_changed"),
        ]
    );
    let leaked: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] != "subscription.revoked")
        .filter(|f| f["scope"] == open.as_str() || f["scope"] == open_thread.as_str())
        .collect();
    assert!(leaked.is_empty(), "a guest still hears them: {leaked:?}");
    assert!(
        frames
            .iter()
            .any(|f| f["scope"] == private.as_str() && f["data"] == kept),
        "the channels they are in stay: {frames:?}"
    );
    // Subscribing again is refused, as for any guest.
    assert_eq!(bystander.subscribe(&open).await["code"], "forbidden");
    s.check_invariants();
}

/// `channel.created` goes to the workspace's scope, which guests read too (its members,
/// presence); but a guest lists only their own channels, so a public channel they are
/// not in is not theirs to hear of, live or caught up — unless they are among its first
/// members.
#[tokio::test]
async fn guests_do_not_hear_of_public_channels_they_are_not_in() {
    let s = TestServer::start().await;
    let p = People::create(&s).await;
    let fx = fixture(&s, &p).await;
    let ws_scope = format!("workspace:{}", fx.ws);
    let mut guest = s.connect(&p.guest.token).await;
    let mut member = s.connect(&p.member.token).await;
    let before = guest.hello["offsets"][&ws_scope]
        .as_u64()
        .expect("the workspace's offset in hello");
    let unseen = s
        .create_channel(&p.creator, fx.ws, "roadmap", "public", &[])
        .await;
    let shared = s
        .create_channel(&p.creator, fx.ws, "with-guest", "public", &[&p.guest])
        .await;
    let created = |frames: &[Value]| -> Vec<i64> {
        frames
            .iter()
            .filter(|f| f["type"] == "channel.created" && f["scope"] == ws_scope.as_str())
            .filter_map(|f| f["data"]["id"].as_i64())
            .filter(|id| [unseen, shared].contains(id))
            .collect()
    };
    assert_eq!(created(&member.barrier().await), [unseen, shared]);
    assert_eq!(created(&guest.barrier().await), [shared], "live");
    assert_eq!(
        created(&s.logged_after(&p.member, &ws_scope, before).await),
        [unseen, shared]
    );
    assert_eq!(
        created(&s.logged_after(&p.guest, &ws_scope, before).await),
        [shared],
        "caught up over HTTP"
    );
}
