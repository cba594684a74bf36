//! The client against the real server, in-process on `127.0.0.1:0`.

mod common;

use chorus_client::{
    ChannelKind, Client, CloseCode, CreateChannel, CreateUser, Error, ErrorCode, HistoryQuery,
    Options, Realtime, SendMessage, StatusCode, UpdateChannel,
};
use common::{TestServer, WAIT, next_of_type, user, world};
use std::time::Duration;
use tokio::net::TcpListener;

#[tokio::test]
async fn http_api_round_trip() {
    let w = world().await;
    let me = w.bob.me().await.expect("me");
    assert_eq!(me.name, "bob");

    let workspaces = w.bob.list_workspaces().await.expect("workspaces");
    assert_eq!(workspaces.len(), 1);
    assert_eq!(workspaces[0].workspace.id, w.workspace);
    let members = w
        .alice
        .list_workspace_members(w.workspace)
        .await
        .expect("members");
    assert_eq!(members.len(), 3);

    let channels = w.bob.list_channels(w.workspace).await.expect("channels");
    assert!(
        channels
            .iter()
            .any(|c| c.channel.id == w.general.id && c.member)
    );

    let renamed = w
        .alice
        .update_channel(
            w.general.id,
            &UpdateChannel {
                topic: Some("all hands".into()),
                ..UpdateChannel::default()
            },
        )
        .await
        .expect("update");
    assert_eq!(renamed.topic, "all hands");

    w.carol.join_channel(w.general.id).await.expect("join");
    let view = w.alice.get_channel(w.general.id).await.expect("get");
    assert!(view.member_ids.contains(&w.carol_id));
    w.carol.leave_channel(w.general.id).await.expect("leave");
    w.alice
        .add_channel_member(w.general.id, w.carol_id)
        .await
        .expect("add to channel");
    w.alice
        .remove_channel_member(w.general.id, w.carol_id)
        .await
        .expect("remove from channel");

    let sent = w
        .bob
        .send_message(w.general.id, &SendMessage::new("hi @alice"), None)
        .await
        .expect("send");
    assert!(!sent.replayed);
    assert_eq!(sent.message.mentions.len(), 1);
    let reply = w
        .alice
        .send_message(
            w.general.id,
            &SendMessage {
                thread_id: Some(sent.message.id),
                ..SendMessage::new("hello bob")
            },
            None,
        )
        .await
        .expect("reply");
    let thread = w
        .bob
        .list_messages(
            w.general.id,
            &HistoryQuery {
                thread_id: Some(sent.message.id),
                ..HistoryQuery::default()
            },
        )
        .await
        .expect("thread");
    assert_eq!(
        thread.iter().map(|m| m.id).collect::<Vec<_>>(),
        [reply.message.id]
    );

    let edited = w
        .bob
        .edit_message(sent.message.id, "hi all")
        .await
        .expect("edit");
    assert_eq!(edited.text, "hi all");
    assert!(edited.edited_at.is_some());
    let deleted = w.bob.delete_message(sent.message.id).await.expect("delete");
    assert!(deleted.deleted);

    let dm = w
        .alice
        .open_dm(w.workspace, &[w.carol_id])
        .await
        .expect("dm");
    assert!(dm.created);
    assert_eq!(dm.channel.channel.kind, ChannelKind::Dm);
    let again = w
        .carol
        .open_dm(w.workspace, &[dm.channel.channel.created_by])
        .await
        .expect("dm again");
    assert!(!again.created);
    assert_eq!(again.channel.channel.id, dm.channel.channel.id);
}

#[tokio::test]
async fn realtime_delivers_an_http_send() {
    let w = world().await;
    let mut live = Realtime::connect(&w.server.url, &w.bob_token)
        .await
        .expect("connect");
    let scope = format!("channel:{}", w.general.id);
    assert!(live.hello().scopes.contains(&scope), "{:?}", live.hello());
    live.ping().await.expect("ping");

    let sent = w
        .alice
        .send_message(w.general.id, &SendMessage::new("welcome"), None)
        .await
        .expect("send");
    let event = next_of_type(&mut live, "message.created").await;
    assert_eq!(event.scope, scope);
    let offset = event.offset.expect("a durable event has an offset");
    assert_eq!(event.data["id"], sent.message.id.0);
    assert_eq!(event.data["text"], "welcome");
    assert_eq!(live.positions().get(&scope), Some(&offset));

    // Subscribing again from before the message replays it.
    let ack = live
        .subscribe(&scope, Some(offset - 1))
        .await
        .expect("subscribe");
    assert_eq!(ack.recovered, Some(true));
    let replayed = next_of_type(&mut live, "message.created").await;
    assert_eq!(replayed.offset, Some(offset));

    live.typing(w.general.id, None).await.expect("typing");
    live.unsubscribe(&scope).await.expect("unsubscribe");
    assert_eq!(live.positions().get(&scope), None);

    let end = live.close().await;
    assert_eq!(end.close_code(), Some(CloseCode::Normal));
}

#[tokio::test]
async fn forbidden_scopes_are_ws_errors() {
    let w = world().await;
    let secret = w
        .alice
        .create_channel(
            w.workspace,
            &CreateChannel {
                kind: ChannelKind::Private,
                ..CreateChannel::new("secret")
            },
        )
        .await
        .expect("private channel");
    let live = w.carol.realtime().await.expect("connect");
    for scope in [format!("channel:{}", secret.id), "user:1".to_owned()] {
        let err = live.subscribe(&scope, None).await.expect_err("forbidden");
        assert!(
            matches!(
                err,
                Error::Ws {
                    code: ErrorCode::Forbidden,
                    ..
                }
            ),
            "{scope}: {err:?}"
        );
    }
    // The connection survives a refusal.
    live.ping().await.expect("ping after error");
}

#[tokio::test]
async fn idempotent_sends_replay() {
    let w = world().await;
    let once = SendMessage::new("once");
    let send = || w.bob.send_message(w.general.id, &once, Some("key-1"));
    let first = send().await.expect("first send");
    let second = send().await.expect("second send");
    assert!(!first.replayed);
    assert!(second.replayed);
    assert_eq!(first.message, second.message);
    let history = w
        .bob
        .list_messages(w.general.id, &HistoryQuery::default())
        .await
        .expect("history");
    assert_eq!(history.len(), 1);
}

#[tokio::test]
async fn api_errors_parse() {
    let server = TestServer::start().await;
    let stranger = Client::new(&server.url, "not-a-token").expect("client");
    let err = stranger.me().await.expect_err("unauthorized");
    assert!(
        matches!(
            err,
            Error::Api {
                status: StatusCode::UNAUTHORIZED,
                code: ErrorCode::Unauthorized,
                ..
            }
        ),
        "{err:?}"
    );
    let err = Realtime::connect(&server.url, "not-a-token")
        .await
        .err()
        .expect("upgrade refused");
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err:?}");

    let admin = server.admin();
    let err = admin
        .get_channel(chorus_client::ChannelId(999))
        .await
        .expect_err("no such channel");
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err:?}");
    admin
        .create_user(&CreateUser::new("dup"))
        .await
        .expect("first");
    let err = admin
        .create_user(&CreateUser::new("dup"))
        .await
        .expect_err("conflict");
    assert!(
        matches!(
            err,
            Error::Api {
                status: StatusCode::CONFLICT,
                ..
            }
        ),
        "{err:?}"
    );
}

/// A peer that accepts and then says nothing (a hung server, a dead proxy) fails the
/// request at the client's time limit instead of holding its caller forever.
#[tokio::test]
async fn a_silent_server_fails_the_request_at_the_time_limit() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let client = Client::new(&format!("http://{addr}"), "t")
        .expect("client")
        .with_timeout(Duration::from_millis(200));
    let answer = tokio::time::timeout(WAIT, client.me())
        .await
        .expect("cut by the client's own time limit");
    let err = answer.expect_err("nothing was answered");
    assert!(matches!(&err, Error::Http(e) if e.is_timeout()), "{err:?}");
    silent.abort();
}

#[tokio::test]
async fn server_shutdown_reports_its_close_code() {
    let mut server = TestServer::start().await;
    let admin = server.admin();
    let (_, alice) = user(&admin, "alice").await;
    // Without reconnecting, the first disconnect is the end.
    let options = Options {
        reconnect: None,
        ..Options::default()
    };
    let mut live = alice.realtime_with(options).await.expect("connect");
    server.shutdown();
    let none = tokio::time::timeout(WAIT, live.next_event())
        .await
        .expect("closed in time");
    assert!(none.is_none());
    let end = live.disconnect().expect("a disconnect reason");
    assert_eq!(end.close_code(), Some(CloseCode::ServerShutdown), "{end}");
    assert!(end.should_reconnect());
    let err = live.ping().await.expect_err("closed");
    assert!(matches!(err, Error::Closed(_)), "{err:?}");
}

#[tokio::test]
async fn a_scopes_events_are_read_page_by_page_as_the_socket_delivers_them() {
    let w = world().await;
    let channel = w.general.id;
    let scope = format!("channel:{channel}");
    let mut live = Realtime::connect(&w.server.url, &w.bob_token)
        .await
        .expect("bob connects");
    let start = live
        .hello()
        .offsets
        .get(&scope)
        .copied()
        .unwrap_or_default();
    let mut sent = Vec::new();
    for i in 0..5 {
        let text = SendMessage::new(format!("m{i}"));
        let message = w.alice.send_message(channel, &text, None).await;
        sent.push(message.expect("send").message.id.0);
    }
    let mut socket = Vec::new();
    while socket.len() < sent.len() {
        let event = next_of_type(&mut live, "message.created").await;
        socket.push(event);
    }

    let mut read = Vec::new();
    let mut after = start;
    loop {
        let page = w
            .bob
            .scope_events(&scope, after, Some(2))
            .await
            .expect("a page of events");
        assert_eq!(page.scope, scope);
        assert!(page.events.len() <= 2, "{page:?}");
        read.extend(page.events.into_iter().map(chorus_client::EventFrame::from));
        if !page.more {
            assert_eq!(page.next, page.head);
            break;
        }
        assert!(page.next > after, "next {} after {after}", page.next);
        after = page.next;
    }
    let created: Vec<_> = read
        .into_iter()
        .filter(|e| e.kind == "message.created")
        .collect();
    assert_eq!(created, socket, "the same events as the socket delivered");

    // Past the head (a position of another database): gone, the client reloads instead.
    let head = socket.last().and_then(|e| e.offset).expect("an offset");
    let err = w
        .bob
        .scope_events(&scope, head + 100, None)
        .await
        .expect_err("gone");
    assert!(
        matches!(
            err,
            Error::Api {
                status: StatusCode::GONE,
                ..
            }
        ),
        "{err:?}"
    );
    // Authorized like a subscription.
    let err = w
        .carol
        .scope_events(&format!("user:{}", w.bob_id), 0, None)
        .await
        .expect_err("another user's scope");
    assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err:?}");
}

#[tokio::test]
async fn a_stream_writer_batches_appends_and_completes() {
    let w = world().await;
    let mut writer = w
        .bob
        .open_stream(w.general.id, &SendMessage::new(""))
        .await
        .expect("open");
    assert_eq!(
        writer.message().state,
        chorus_client::MessageState::Streaming
    );
    let mut expected = String::new();
    for i in 0..200 {
        let token = format!("t{i} ");
        expected.push_str(&token);
        writer.append(&token).await.expect("append");
    }
    // 200 tokens appended at once: the first is sent, the rest wait for the interval.
    assert!(writer.requests() < 10, "{} requests", writer.requests());
    let id = writer.message().id;
    let done = writer.complete().await.expect("complete");
    assert_eq!(done.text, expected);
    assert_eq!(done.state, chorus_client::MessageState::Complete);
    // Writing to it again is a conflict; someone else's stream is forbidden.
    let err = w.bob.append_message(id, "x").await.expect_err("ended");
    assert!(
        matches!(
            err,
            Error::Api {
                code: ErrorCode::Conflict,
                ..
            }
        ),
        "{err:?}"
    );
    let writer = w
        .bob
        .open_stream(w.general.id, &SendMessage::new("partial"))
        .await
        .expect("open");
    let other = writer.message().id;
    let err = w
        .alice
        .append_message(other, "x")
        .await
        .expect_err("not hers");
    assert!(
        matches!(
            err,
            Error::Api {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{err:?}"
    );
    let aborted = writer.abort("changed my mind").await.expect("abort");
    assert_eq!(aborted.state, chorus_client::MessageState::Aborted);
    assert_eq!(aborted.text, "partial");
}

#[tokio::test]
async fn publish_reaches_subscribers_and_breaking_the_schema_names_the_path() {
    let namespace = |name: &str, pattern: &str, publish: &str, retention: Option<u64>| {
        chorus_client::Namespace {
            name: name.into(),
            pattern: pattern.into(),
            read: "authenticated".into(),
            publish: publish.into(),
            schema: Some(serde_json::json!({
                "type": "object",
                "required": ["x", "y"],
                "properties": {"x": {"type": "number"}, "y": {"type": "number"}}
            })),
            retention_events: retention,
            retention_secs: None,
            presence: false,
            join_leave: false,
        }
    };
    let server = TestServer::start_with(|c| {
        c.namespaces = vec![
            namespace("boards", "topic:boards.{board}", "authenticated", None),
            namespace("cursors", "topic:cursors.{doc}", "authenticated", Some(0)),
            namespace("news", "topic:news", "server", None),
        ]
    })
    .await;
    let w = common::world_on(server).await;
    let mut carol = w.carol.realtime().await.expect("connect");
    carol
        .subscribe("topic:boards.7", None)
        .await
        .expect("subscribe");
    let bob = w.bob.realtime().await.expect("connect");

    let offset = bob
        .publish(
            "topic:boards.7",
            "card.moved",
            serde_json::json!({"x": 1, "y": 2.5}),
        )
        .await
        .expect("publish");
    assert!(offset.is_some(), "a namespace with history gives an offset");
    let event = common::next_event(&mut carol).await;
    assert_eq!(event.scope, "topic:boards.7");
    assert_eq!(event.kind, "card.moved");
    assert_eq!(event.offset, offset);
    assert_eq!(event.data, serde_json::json!({"x": 1, "y": 2.5}));

    // Without history: acked with no offset.
    let offset = bob
        .publish(
            "topic:cursors.doc1",
            "cursor",
            serde_json::json!({"x": 0, "y": 0}),
        )
        .await
        .expect("publish without history");
    assert_eq!(offset, None);

    let err = bob
        .publish(
            "topic:boards.7",
            "card.moved",
            serde_json::json!({"x": "one", "y": 2}),
        )
        .await
        .expect_err("schema violation");
    match &err {
        Error::Ws {
            code: ErrorCode::BadRequest,
            message,
        } => assert!(message.contains("/x"), "{message}"),
        other => panic!("expected bad_request, got {other:?}"),
    }
    let err = bob
        .publish(
            "topic:news",
            "headline",
            serde_json::json!({"x": 1, "y": 1}),
        )
        .await
        .expect_err("server-only namespace");
    assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err:?}");
    // The connection survives the refusals.
    bob.ping().await.expect("ping after errors");
}
