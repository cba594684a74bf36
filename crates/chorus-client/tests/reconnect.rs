//! Reconnect and resume against the real server: each event reaches the application
//! once and in order across a restart of the server, a cut connection, and the end.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chorus_client::{
    Backoff, ChannelId, Client, CloseCode, ConnectionState, CreateChannel, Error, ErrorCode,
    EventFrame, HistoryQuery, MessageId, Options, Publish, RESUME_GAP, Realtime, SendMessage,
};
use common::{TestServer, WAIT, World, is_presence, next_event, world, world_on};
use futures_util::FutureExt;
use serde_json::json;
use tokio::time::Instant;

/// Reconnects quickly, so the tests do not wait out the default backoff.
fn fast() -> Options {
    Options {
        reconnect: Some(Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(300),
            max_attempts: None,
        }),
        ..Options::default()
    }
}

/// What the application saw: message ids per channel in delivery order, the ids that
/// came from the HTTP catch-up, and the gap notices. Offsets must increase per scope
/// (a gap notice may start a new numbering: after a restart).
#[derive(Default)]
struct Seen {
    ids: BTreeMap<i64, Vec<i64>>,
    caught_up: HashSet<i64>,
    gaps: Vec<EventFrame>,
    last: BTreeMap<String, u64>,
}

impl Seen {
    fn record(&mut self, event: EventFrame) {
        if event.kind == RESUME_GAP {
            assert_eq!(event.data["scope"], event.scope.as_str(), "{event:?}");
            self.last.remove(&event.scope);
            self.gaps.push(event);
            return;
        }
        if let Some(offset) = event.offset {
            let last = self.last.entry(event.scope.clone()).or_default();
            assert!(
                offset > *last,
                "{}: offset {offset} after {last}: a duplicate or a reordering",
                event.scope
            );
            *last = offset;
        }
        if event.kind == "message.created" && event.scope.starts_with("channel:") {
            let id = event.data["id"].as_i64().expect("message id");
            let channel = event.data["channel_id"].as_i64().expect("channel id");
            assert_eq!(event.scope, format!("channel:{channel}"));
            if event.offset.is_none() {
                self.caught_up.insert(id);
            }
            self.ids.entry(channel).or_default().push(id);
        }
    }

    fn total(&self) -> usize {
        self.ids.values().map(Vec::len).sum()
    }

    fn count(&self, channel: ChannelId) -> usize {
        self.ids.get(&channel.0).map_or(0, Vec::len)
    }

    fn gap(&self, scope: &str) -> Option<&EventFrame> {
        self.gaps.iter().find(|g| g.scope == scope)
    }
}

/// Reads events until `done` holds (each event within [`WAIT`]).
async fn read_until(live: &mut Realtime, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    while !done(seen) {
        seen.record(next_event(live).await);
    }
}

/// Makes sure nothing more is on its way: after a ping's answer, every event the server
/// queued before it has been handed over; those are read too.
async fn settle(live: &mut Realtime, seen: &mut Seen) {
    live.ping().await.expect("ping");
    while let Some(Some(event)) = live.next_event().now_or_never() {
        seen.record(event);
    }
}

/// Sends `count` messages one after another, each with its own idempotency key, and
/// retries a failed send (the server is restarting) with the same key: no message is
/// lost or doubled by the sender. Returns the ids.
async fn send_all(sender: Client, channel: ChannelId, count: usize, tag: String) -> Vec<i64> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let key = format!("{tag}-{i}");
        let message = SendMessage::new(format!("{tag} {i}"));
        let deadline = Instant::now() + WAIT * 3;
        let sent = loop {
            match sender.send_message(channel, &message, Some(&key)).await {
                Ok(sent) => break sent,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!("{key}: {err}"),
            }
        };
        ids.push(sent.message.id.0);
    }
    ids
}

/// Every top-level message of the channel, oldest first, over HTTP.
async fn history(client: &Client, channel: ChannelId) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let query = HistoryQuery {
            after: Some(MessageId(after)),
            limit: Some(200),
            ..HistoryQuery::default()
        };
        let page = client
            .list_messages(channel, &query)
            .await
            .expect("history");
        ids.extend(page.iter().map(|m| m.id.0));
        match page.last() {
            Some(last) if page.len() == 200 => after = last.id.0,
            _ => return ids,
        }
    }
}

/// Channels with Bob in them.
async fn channels(w: &World, count: usize) -> Vec<ChannelId> {
    let mut out = Vec::new();
    for i in 0..count {
        let channel = w
            .alice
            .create_channel(
                w.workspace,
                &CreateChannel {
                    member_ids: vec![w.bob_id],
                    ..CreateChannel::new(format!("stream-{i}"))
                },
            )
            .await
            .expect("channel");
        out.push(channel.id);
    }
    out
}

/// Waits until the connection has been replaced by a resumed one; returns its session.
async fn reconnected(live: &Realtime, before: &str) -> String {
    let mut states = live.state_changes();
    tokio::time::timeout(WAIT, async {
        loop {
            let session = live.hello().session_id;
            if session != before && *states.borrow_and_update() == ConnectionState::Open {
                return session;
            }
            states
                .changed()
                .await
                .expect("the connection is still alive");
        }
    })
    .await
    .expect("reconnected in time")
}

async fn wait_for_state(
    live: &Realtime,
    what: &str,
    matches: impl FnMut(&ConnectionState) -> bool,
) -> ConnectionState {
    let mut states = live.state_changes();
    let state = tokio::time::timeout(WAIT, states.wait_for(matches))
        .await
        .unwrap_or_else(|_| panic!("{what} in time"))
        .map(|state| state.clone());
    state.unwrap_or_else(|_| panic!("{what}: the connection ended: {:?}", live.state()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_stream_delivers_every_message_once_in_order() {
    const CHANNELS: usize = 3;
    const PER_CHANNEL: usize = 150;
    /// Sent per channel while Bob is away, through another server on the same data.
    const OFFLINE: usize = 5;
    let mut w = world().await;
    let channels = channels(&w, CHANNELS).await;
    let mut live = Realtime::connect_with(&w.server.url, &w.bob_token, fast())
        .await
        .expect("bob connects");
    // Carol's requests give up quickly: she shows what a request meets while disconnected.
    let carol = Realtime::connect_with(
        &w.server.url,
        &w.carol_token,
        Options {
            request_timeout: Duration::from_secs(1),
            ..fast()
        },
    )
    .await
    .expect("carol connects");
    let mut seen = Seen::default();

    // A first message in every channel: the HTTP catch-up starts after the last one seen.
    let mut first = Vec::new();
    for &channel in &channels {
        let sent = w
            .alice
            .send_message(channel, &SendMessage::new("first"), None)
            .await
            .expect("first message");
        first.push(sent.message.id.0);
    }
    read_until(&mut live, &mut seen, |s| {
        channels.iter().all(|&ch| s.count(ch) == 1)
    })
    .await;

    let senders: Vec<_> = channels
        .iter()
        .map(|&ch| {
            let tag = format!("live-{ch}");
            tokio::spawn(send_all(w.alice.clone(), ch, PER_CHANNEL, tag))
        })
        .collect();
    read_until(&mut live, &mut seen, |s| {
        s.total() >= CHANNELS + CHANNELS * PER_CHANNEL / 3
    })
    .await;

    // The server stops mid-stream: its clients are told 3001 and keep trying.
    w.server.stop().await;
    for who in [&live, &carol] {
        let state = wait_for_state(who, "the 3001", |s| {
            matches!(s, ConnectionState::Reconnecting { .. })
        })
        .await;
        let ConnectionState::Reconnecting { cause, .. } = state else {
            unreachable!()
        };
        assert_eq!(
            cause.close_code(),
            Some(CloseCode::ServerShutdown),
            "{cause}"
        );
    }
    assert_eq!(live.disconnect(), None, "a lost connection is not the end");
    // A request meets the reconnect, and says so when it gives up.
    let err = carol.ping().await.expect_err("no server to answer");
    assert!(
        matches!(&err, Error::Reconnecting(cause) if cause.code == 3001),
        "{err:?}"
    );

    // Messages Bob cannot get live: only the HTTP catch-up can bring them.
    let alice_token = w.alice_token.clone();
    let offline: Vec<i64> = w
        .server
        .elsewhere(async |url| {
            let alice = Client::new(url, alice_token).expect("client");
            let mut ids = Vec::new();
            for &channel in &channels {
                for i in 0..OFFLINE {
                    let text = SendMessage::new(format!("offline {i}"));
                    let sent = alice
                        .send_message(channel, &text, None)
                        .await
                        .expect("offline send");
                    ids.push(sent.message.id.0);
                }
            }
            ids
        })
        .await;

    // A request made while disconnected waits for the reconnect.
    let (pinged, ()) = tokio::join!(live.ping(), w.server.restart());
    pinged.expect("a ping made while disconnected is answered once reconnected");

    let mut sent: Vec<i64> = first.clone();
    sent.extend(offline.iter().copied());
    for task in senders {
        sent.extend(task.await.expect("sender"));
    }
    let mut expected = BTreeMap::new();
    for &channel in &channels {
        let ids = history(&w.alice, channel).await;
        assert_eq!(ids.len(), 1 + PER_CHANNEL + OFFLINE, "channel {channel}");
        expected.insert(channel.0, ids);
    }
    let mut all: Vec<i64> = expected.values().flatten().copied().collect();
    all.sort_unstable();
    sent.sort_unstable();
    assert_eq!(all, sent, "the senders made each message once");

    read_until(&mut live, &mut seen, |s| {
        channels
            .iter()
            .all(|ch| s.count(*ch) >= expected[&ch.0].len())
    })
    .await;
    settle(&mut live, &mut seen).await;
    for channel in &channels {
        assert_eq!(
            seen.ids.get(&channel.0),
            expected.get(&channel.0),
            "channel {channel}: every message exactly once, in order"
        );
    }
    // The event log kept every scope's window across the restart: the resume recovered
    // each one, so the messages committed while Bob was away came with the replay, not
    // from an HTTP catch-up, and no scope reports a gap.
    for id in &offline {
        assert!(
            !seen.caught_up.contains(id),
            "message {id} was committed while Bob was away: the resume replays it"
        );
    }
    for channel in &channels {
        let scope = format!("channel:{channel}");
        assert!(
            seen.gap(&scope).is_none(),
            "{scope}: {:?}",
            seen.gap(&scope)
        );
    }
    let user = format!("user:{}", w.bob_id);
    assert!(seen.gap(&user).is_none(), "{user}: {:?}", seen.gap(&user));
    assert_eq!(live.state(), ConnectionState::Open);
    drop(carol);
    let end = live.close().await;
    assert_eq!(end.close_code(), Some(CloseCode::Normal));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_resumes_exactly_once_in_order() {
    const CHANNELS: usize = 3;
    const PER_CHANNEL: usize = 300;
    const CUTS: usize = 2;
    let w = world().await;
    let channels = channels(&w, CHANNELS).await;
    let mut live = Realtime::connect_with(&w.server.url, &w.bob_token, fast())
        .await
        .expect("bob connects");
    let mut seen = Seen::default();

    let senders: Vec<_> = channels
        .iter()
        .map(|&ch| tokio::spawn(send_all(w.alice.clone(), ch, PER_CHANNEL, format!("m{ch}"))))
        .collect();
    let mut sessions = vec![live.hello().session_id];
    for cut in 1..=CUTS {
        read_until(&mut live, &mut seen, |s| {
            s.total() >= cut * CHANNELS * PER_CHANNEL / (CUTS + 1)
        })
        .await;
        // The TCP connection goes away without a close frame, events in flight with it.
        live.drop_connection_for_test();
        let before = sessions.last().cloned().unwrap_or_default();
        sessions.push(reconnected(&live, &before).await);
    }

    let mut sent = BTreeMap::new();
    for (channel, task) in channels.iter().zip(senders) {
        sent.insert(channel.0, task.await.expect("sender"));
    }
    read_until(&mut live, &mut seen, |s| {
        s.total() >= CHANNELS * PER_CHANNEL
    })
    .await;
    settle(&mut live, &mut seen).await;
    for channel in &channels {
        assert_eq!(
            seen.ids.get(&channel.0),
            sent.get(&channel.0),
            "channel {channel}: every message exactly once, in order"
        );
    }
    // The server still had everything: recovered, no HTTP catch-up, no gap.
    assert!(seen.caught_up.is_empty(), "{:?}", seen.caught_up);
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
    let stats = w.server.stats().await;
    assert_eq!(stats["metrics"]["resumes_unrecovered"], 0, "{stats}");
    assert!(
        stats["metrics"]["resumes_recovered"].as_u64() >= Some(CUTS as u64),
        "{stats}"
    );
    assert_eq!(stats["metrics"]["connections_total"], 1 + CUTS as u64);
    assert_eq!(live.state(), ConnectionState::Open);
}

#[tokio::test]
async fn closing_is_final_and_does_not_reconnect() {
    let w = world().await;
    let live = Realtime::connect_with(&w.server.url, &w.bob_token, fast())
        .await
        .expect("connect");
    let mut states = live.state_changes();
    let end = live.close().await;
    assert_eq!(end.close_code(), Some(CloseCode::Normal), "{end}");
    assert_eq!(
        *states.borrow_and_update(),
        ConnectionState::Closed(end.clone())
    );
    // The connection task is gone: nothing is left to reconnect.
    assert!(states.changed().await.is_err());
    let stats = w.server.stats().await;
    assert_eq!(stats["metrics"]["connections_total"], 1, "{stats}");
}

#[tokio::test]
async fn a_close_code_that_says_not_to_retry_is_final() {
    let server = TestServer::start_with(|c| {
        c.inbound_per_sec = 1;
        c.inbound_burst = 1;
    })
    .await;
    let w = world_on(server).await;
    let mut live = Realtime::connect_with(&w.server.url, &w.bob_token, fast())
        .await
        .expect("connect");
    // Far over the inbound rate: the server closes with 3501 (flood).
    let answers = futures_util::future::join_all((0..300).map(|_| live.ping())).await;
    assert!(
        answers.iter().any(|a| matches!(
            a,
            Err(Error::Ws {
                code: ErrorCode::RateLimited,
                ..
            })
        )),
        "{answers:?}"
    );
    let state = wait_for_state(&live, "the end", |s| {
        matches!(s, ConnectionState::Closed(_))
    })
    .await;
    let ConnectionState::Closed(end) = state else {
        unreachable!()
    };
    assert_eq!(end.close_code(), Some(CloseCode::Flood), "{end}");
    assert!(!end.should_reconnect());
    assert_eq!(live.disconnect(), Some(end));
    // The stream ends: nothing but presence was left in it.
    loop {
        let event = tokio::time::timeout(WAIT, live.next_event())
            .await
            .expect("ended in time");
        match event {
            None => break,
            Some(event) => assert!(is_presence(&event), "{event:?}"),
        }
    }
    let stats = w.server.stats().await;
    assert_eq!(stats["metrics"]["connections_total"], 1, "{stats}");
}

#[tokio::test]
async fn subscriptions_survive_a_reconnect() {
    let w = world().await;
    let mut live = Realtime::connect_with(&w.server.url, &w.bob_token, fast())
        .await
        .expect("connect");
    live.subscribe("topic:deploys", None)
        .await
        .expect("subscribe");
    let general = format!("channel:{}", w.general.id);
    live.unsubscribe(&general).await.expect("unsubscribe");

    let before = live.hello().session_id;
    live.drop_connection_for_test();
    reconnected(&live, &before).await;
    // The server subscribes Bob's channels on connect; the client leaves it again.
    assert!(live.hello().scopes.contains(&general));
    assert!(!live.positions().contains_key(&general));

    w.alice
        .send_message(w.general.id, &SendMessage::new("not for bob's app"), None)
        .await
        .expect("send");
    let admin = w.server.admin();
    admin
        .publish(&Publish {
            scope: "topic:deploys".into(),
            kind: "deploy.finished".into(),
            data: json!({"version": 7}),
            ephemeral: false,
        })
        .await
        .expect("publish");
    let event = next_event(&mut live).await;
    assert_eq!(event.scope, "topic:deploys", "{event:?}");
    assert_eq!(event.data["version"], 7);
    assert!(live.positions().contains_key("topic:deploys"));
}

/// Past the resume's window (3 events) but still in the event log (trimmed once a
/// minute): the resume answers `recovered: false` and the client reads the missed
/// events from `GET /api/v1/scopes/{scope}/events`, delivered as live ones.
#[tokio::test]
async fn a_resume_past_the_retention_window_is_caught_up_over_http() {
    let server = TestServer::start_with(|c| c.retention_events = 3).await;
    let w = world_on(server).await;
    let channel = w.general.id;
    let send = async |text: &str| {
        let sent = w
            .alice
            .send_message(channel, &SendMessage::new(text), None)
            .await
            .expect("send");
        sent.message.id.0
    };
    let options = Options {
        event_buffer: 4,
        ..fast()
    };
    let mut live = Realtime::connect_with(&w.server.url, &w.bob_token, options)
        .await
        .expect("connect");
    let mut seen = Seen::default();
    let mut ids = vec![send("first").await];
    read_until(&mut live, &mut seen, |s| s.count(channel) == 1).await;

    // Bob stops reading: his buffer overflows (3008 on his side) and the client waits
    // for room before it reconnects.
    for i in 0..5 {
        ids.push(send(&format!("buffered {i}")).await);
    }
    let state = wait_for_state(&live, "the overflow", |s| {
        matches!(s, ConnectionState::Reconnecting { .. })
    })
    .await;
    assert!(
        matches!(&state, ConnectionState::Reconnecting { cause, .. } if cause.close_code() == Some(CloseCode::SlowConsumer)),
        "{state:?}"
    );
    // Meanwhile, more than the server retains.
    let away: Vec<i64> = {
        let mut away = Vec::new();
        for i in 0..10 {
            away.push(send(&format!("away {i}")).await);
        }
        away
    };
    ids.extend(&away);

    read_until(&mut live, &mut seen, |s| s.count(channel) >= ids.len()).await;
    settle(&mut live, &mut seen).await;
    assert_eq!(
        seen.ids.get(&channel.0),
        Some(&ids),
        "every message exactly once, in order"
    );
    for id in &away {
        assert!(
            !seen.caught_up.contains(id),
            "{id} comes from the scope's events, with its offset, not from the messages"
        );
    }
    let scope = format!("channel:{channel}");
    assert!(seen.gap(&scope).is_none(), "{:?}", seen.gap(&scope));
    let stats = w.server.stats().await;
    assert!(
        stats["metrics"]["resumes_unrecovered"].as_u64() >= Some(1),
        "{stats}"
    );
    assert_eq!(live.state(), ConnectionState::Open);
}
