//! One storage suite, two backends: every scenario runs on SQLite (a temporary file)
//! and on PostgreSQL (a fresh database on `CHORUS_TEST_POSTGRES_URL`, dropped after the
//! test). Without that variable the PostgreSQL tests are reported *ignored* (not passed),
//! unless `CHORUS_REQUIRE_SERVICES=1` makes them run and fail (as `scripts/test` does).
//!
//! Whether a test can run is only known when the suite starts, which the standard test
//! harness cannot express, so this file has its own `main` (`harness = false`,
//! libtest-mimic): the same command line, listing and output, nextest included.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;

use chorus_chat::error::ChatError;
use chorus_chat::model::*;
use chorus_chat::service::OpenDm;
use chorus_chat::store::{
    Acting, AttemptOutcome, ChannelPatch, ClaimLimits, CreatedChannel, DEACTIVATED_WEBHOOK,
    DeliveryList, MessageQuery, NO_WEBHOOK, NewChannel, NewMessage, NewSignInCode, NewToken,
    NewTurns, NewUser, NewWebhookDelivery, Outbox, PgStore, Redemption, SqliteStore, Store,
    TokenOwner, events_only, no_events,
};
use chorus_chat::testing::ScratchDatabase;
use chorus_chat::{Chat, ChatConfig};
use chorus_realtime::{Clock, Engine, EngineConfig};
use libtest_mimic::{Arguments, Failed, Trial};
use tempfile::TempDir;

// ---- the two backends ---------------------------------------------------------------

/// A store and whatever keeps its database alive (deleted / dropped with it).
struct TestDb {
    store: Arc<dyn Store>,
    /// The database's URL, for a test that writes beside the store.
    url: String,
    _keep: Keep,
}

enum Keep {
    Sqlite(#[allow(dead_code)] TempDir),
    Postgres(#[allow(dead_code)] ScratchDatabase),
}

async fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chorus.db");
    let store = SqliteStore::open(&path, Clock::system()).await.unwrap();
    TestDb {
        store: Arc::new(store),
        url: format!("sqlite://{}", path.display()),
        _keep: Keep::Sqlite(dir),
    }
}

/// The PostgreSQL server to test on (`None`: not configured), and whether its tests are
/// ignored: when none is configured and none is required.
fn postgres_target() -> (Option<String>, bool) {
    let url = std::env::var("CHORUS_TEST_POSTGRES_URL").ok();
    let required = std::env::var("CHORUS_REQUIRE_SERVICES").as_deref() == Ok("1");
    let ignored = url.is_none() && !required;
    (url, ignored)
}

async fn postgres_db(admin_url: Option<String>) -> TestDb {
    let admin_url = required_postgres(admin_url);
    let db = ScratchDatabase::create(&admin_url).await.unwrap();
    let store = PgStore::connect(db.url(), 8, Clock::system())
        .await
        .unwrap();
    TestDb {
        store: Arc::new(store),
        url: db.url().to_owned(),
        _keep: Keep::Postgres(db),
    }
}

/// The admin URL of a test that runs although none is configured: a failure naming why.
fn required_postgres(admin_url: Option<String>) -> String {
    match admin_url {
        Some(url) => url,
        None => panic!(
            "a PostgreSQL test runs (CHORUS_REQUIRE_SERVICES=1, or ignored tests were \
             included) but CHORUS_TEST_POSTGRES_URL is not set: run `scripts/services \
             start` and source its env file"
        ),
    }
}

/// A scenario: `async fn name(Arc<dyn Store>)`, run on each backend.
type Scenario = fn(Arc<dyn Store>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// A scenario that also writes beside the store, on the database's URL (rows an
/// earlier version may have left): `async fn name(Arc<dyn Store>, String)`.
type BesideScenario = fn(Arc<dyn Store>, String) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Either kind of scenario.
#[derive(Clone, Copy)]
enum Runs {
    Store(Scenario),
    Beside(BesideScenario),
}

impl Runs {
    fn on(self, db: &TestDb) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        match self {
            Runs::Store(scenario) => scenario(db.store.clone()),
            Runs::Beside(scenario) => scenario(db.store.clone(), db.url.clone()),
        }
    }
}

/// The scenarios, each run as `name::sqlite` and `name::postgres`.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        [$((stringify!($name), (|store| Box::pin($name(store))) as Scenario)),*]
    };
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let (postgres, skip_postgres) = postgres_target();
    let mut trials = Vec::new();
    for (name, scenario) in scenarios!(
        users_and_tokens,
        tokens_are_listed_revoked_and_touched,
        sign_in_links_are_redeemed_once,
        users_are_paged_and_deactivated,
        deactivated_agents_are_not_rotated_or_sent_webhooks,
        presence_columns,
        lookups_of_many_keys,
        a_rollup_appends_to_its_streams_in_one_transaction,
        workspaces_members_and_roles,
        concurrent_add_member_reports_new_once,
        role_changes_compare_and_keep_an_owner,
        concurrent_owner_changes_keep_an_owner,
        removing_a_member_leaves_the_workspace_channels,
        a_channel_has_only_members_of_its_workspace,
        an_add_racing_a_removal_from_the_workspace_leaves_no_member,
        a_post_racing_its_authors_leave_comes_before_it_or_not_at_all,
        a_completion_racing_its_authors_leave_comes_before_it_or_not_at_all,
        a_pin_racing_the_messages_delete_leaves_no_pin_on_a_tombstone,
        a_reaction_racing_the_messages_delete_leaves_none_on_a_tombstone,
        a_reaction_racing_the_reactors_leave_comes_before_it_or_not_at_all,
        a_pin_racing_the_pinners_leave_comes_before_it_or_not_at_all,
        a_reactions_removal_racing_the_reactors_leave_comes_before_it_or_not_at_all,
        an_unpin_racing_the_unpinners_leave_comes_before_it_or_not_at_all,
        owners_acting_on_each_other_at_once_do_not_both_succeed,
        workspace_creations_at_once_stay_within_the_cap,
        tokens_added_at_once_stay_within_the_cap,
        a_public_channels_creation_lists_the_guests_it_is_not_for,
        lists_and_observers_racing_a_departure_name_no_outsider,
        channels_and_membership,
        visible_channels_and_dm_members,
        dm_keys_are_unique_per_workspace,
        dm_get_or_create_races_to_one_channel,
        nodes_starting_together_create_one_admin,
        messages_send_and_page,
        idempotent_send,
        idempotent_send_under_concurrency,
        concurrent_sends_each_get_their_own_message,
        batched_and_other_inserts_interleave_with_their_events,
        creations_settings_and_lists_log_their_events,
        a_change_logs_more_events_than_one_statement_binds,
        logged_events_read_back_exactly,
        the_latest_events_are_read_across_scopes,
        edit_and_delete,
        a_message_tells_only_those_who_may_read_its_channel,
        threads_and_reply_counts,
        concurrent_replies_count_exactly,
        reactions,
        pins,
        reads_unread_and_mentions,
        after_paging_never_skips_a_late_commit,
        delivery_lists_observers_and_agent_members,
        round_robin_turns_compare_and_set,
        turns_raced_by_many_writers_advance_once_each,
        webhook_queue_claims_records_and_lists,
        a_webhook_claim_shares_its_slots_between_users,
        a_claim_with_users_busy_takes_everyone_elses_oldest_first,
        webhook_claims_never_overlap,
        server_keys_are_found_by_hash_listed_and_deleted,
    )
    .map(|(name, scenario)| (name, Runs::Store(scenario)))
    .into_iter()
    .chain([(
        "a_pin_left_on_a_tombstone_is_neither_listed_nor_counted",
        Runs::Beside(|store, url| {
            Box::pin(a_pin_left_on_a_tombstone_is_neither_listed_nor_counted(
                store, url,
            ))
        }),
    )]) {
        trials.push(Trial::test(format!("{name}::sqlite"), move || {
            // Multi-threaded runtimes, so the concurrent scenarios really race.
            run(4, async move {
                let db = sqlite_db().await;
                scenario.on(&db).await;
            })
        }));
        let url = postgres.clone();
        trials.push(
            Trial::test(format!("{name}::postgres"), move || {
                run(4, async move {
                    let db = postgres_db(url).await;
                    scenario.on(&db).await;
                })
            })
            .with_ignored_flag(skip_postgres),
        );
    }
    let url = postgres.clone();
    trials.push(
        Trial::test("postgres_outage_is_unavailable_and_recovers", move || {
            run(2, postgres_outage_is_unavailable_and_recovers(url))
        })
        .with_ignored_flag(skip_postgres),
    );
    trials.push(Trial::test(
        "sqlite_wal_stays_short_under_steady_reads_and_writes",
        || run(4, sqlite_wal_stays_short_under_steady_reads_and_writes()),
    ));
    trials.push(Trial::test(
        "sqlite_a_batch_whose_events_fail_leaves_nothing_and_the_writer_usable",
        || {
            run(
                2,
                sqlite_a_batch_whose_events_fail_leaves_nothing_and_the_writer_usable(),
            )
        },
    ));
    libtest_mimic::run(&args, trials).exit_code()
}

/// Runs a test on a runtime of its own (a panic fails the test).
fn run(workers: usize, test: impl Future<Output = ()>) -> Result<(), Failed> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(format!("starting a runtime: {e}")))?
        .block_on(test);
    Ok(())
}

// ---- helpers ------------------------------------------------------------------------

async fn user(store: &Arc<dyn Store>, name: &str) -> User {
    store
        .create_user(NewUser {
            name: name.into(),
            display_name: name.to_uppercase(),
            kind: UserKind::Human,
            webhook_url: None,
            is_admin: false,
        })
        .await
        .unwrap()
}

async fn channel(
    store: &Arc<dyn Store>,
    ws: WorkspaceId,
    name: &str,
    kind: ChannelKind,
    by: UserId,
    members: &[UserId],
) -> Channel {
    store
        .create_channel(NewChannel {
            workspace_id: ws,
            name: name.into(),
            topic: String::new(),
            kind,
            policy: Policy::All,
            created_by: by,
            members: members.to_vec(),
            dm_key: None,
            settings: Default::default(),
        })
        .await
        .unwrap()
}

fn new_message(ch: ChannelId, author: UserId, text: &str) -> NewMessage {
    NewMessage {
        channel_id: ch,
        author_id: author,
        text: text.into(),
        thread_id: None,
        mentions: Vec::new(),
        idempotency_key: None,
        streaming: false,
        turns: Default::default(),
        kind: Default::default(),
        audience: Vec::new(),
    }
}

async fn send(store: &Arc<dyn Store>, ch: ChannelId, author: UserId, text: &str) -> Message {
    store
        .insert_message(new_message(ch, author, text))
        .await
        .unwrap()
        .message
}

async fn reply(store: &Arc<dyn Store>, root: &Message, author: UserId, text: &str) -> Message {
    let inserted = store
        .insert_message(NewMessage {
            thread_id: Some(root.id),
            ..new_message(root.channel_id, author, text)
        })
        .await
        .unwrap();
    assert!(inserted.created);
    inserted.message
}

fn query(limit: u32) -> MessageQuery {
    MessageQuery {
        limit,
        ..MessageQuery::default()
    }
}

fn ids(messages: &[Message]) -> Vec<i64> {
    messages.iter().map(|m| m.id.0).collect()
}

/// A workspace owned by a fresh user, with a public channel they are a member of.
async fn setup(store: &Arc<dyn Store>) -> (User, Workspace, Channel) {
    let owner = user(store, "owner").await;
    let ws = store.create_workspace("acme", owner.id).await.unwrap();
    let ch = channel(
        store,
        ws.id,
        "general",
        ChannelKind::Public,
        owner.id,
        &[owner.id],
    )
    .await;
    (owner, ws, ch)
}

// ---- users --------------------------------------------------------------------------

async fn users_and_tokens(store: Arc<dyn Store>) {
    assert_eq!(store.count_users().await.unwrap(), 0);
    let alice = user(&store, "alice").await;
    assert_eq!(alice.name, "alice");
    assert_eq!(alice.display_name, "ALICE");
    assert_eq!(alice.kind, UserKind::Human);
    assert!(!alice.is_admin);
    assert_eq!(alice.status_text, "");
    let bot = store
        .create_user(NewUser {
            name: "bot".into(),
            display_name: "Bot".into(),
            kind: UserKind::Agent,
            webhook_url: Some("http://127.0.0.1:9/hook".into()),
            is_admin: true,
        })
        .await
        .unwrap();
    assert!(bot.id > alice.id, "ids grow");
    assert_eq!(bot.kind, UserKind::Agent);
    assert!(bot.is_admin);
    assert_eq!(bot.webhook_url.as_deref(), Some("http://127.0.0.1:9/hook"));

    let dup = store
        .create_user(NewUser {
            name: "alice".into(),
            display_name: "Other".into(),
            kind: UserKind::Human,
            webhook_url: None,
            is_admin: false,
        })
        .await;
    assert!(matches!(dup, Err(ChatError::Conflict(_))), "{dup:?}");
    assert_eq!(store.count_users().await.unwrap(), 2);

    assert_eq!(store.user(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(store.user(UserId(9_999)).await.unwrap(), None);
    assert_eq!(store.user_by_name("bot").await.unwrap(), Some(bot.clone()));
    assert_eq!(store.user_by_name("nobody").await.unwrap(), None);

    let a1 = store
        .add_token(new_token(alice.id, "hash-a1", "laptop", None))
        .await
        .unwrap();
    store
        .add_token(new_token(
            alice.id,
            "hash-a2",
            "ci",
            Some(Timestamp(4_000_000_000_000)),
        ))
        .await
        .unwrap();
    let b = store
        .add_token(new_token(bot.id, "hash-b", "bot", None))
        .await
        .unwrap();
    assert_eq!(
        (a1.name.as_str(), a1.expires_at, a1.last_used_at),
        ("laptop", None, None)
    );
    let owner = store.token_owner("hash-a2").await.unwrap().unwrap();
    assert_eq!(owner.user, alice);
    assert_eq!(owner.expires_at, Some(Timestamp(4_000_000_000_000)));
    assert_eq!(
        store.token_owner("hash-b").await.unwrap(),
        Some(TokenOwner {
            user: bot,
            token_id: b.id,
            expires_at: None,
        })
    );
    assert_eq!(store.token_owner("hash-x").await.unwrap(), None);
    // A token hash is unique: the same hash cannot be issued twice.
    assert!(matches!(
        store
            .add_token(new_token(alice.id, "hash-b", "again", None))
            .await,
        Err(ChatError::Conflict(_))
    ));
}

fn new_token(user: UserId, hash: &str, name: &str, expires_at: Option<Timestamp>) -> NewToken {
    NewToken {
        user_id: user,
        hash: hash.into(),
        name: name.into(),
        expires_at,
        cap: None,
    }
}

/// Two additions at once, one short of a cap: one is made, the other refused as over it.
fn one_made_one_over_the_cap<T: std::fmt::Debug>(
    round: usize,
    a: chorus_chat::error::Result<T>,
    b: chorus_chat::error::Result<T>,
) {
    assert_eq!(
        u8::from(a.is_ok()) + u8::from(b.is_ok()),
        1,
        "round {round}: {a:?} / {b:?}"
    );
    assert!(
        matches!(a.err().or(b.err()), Some(ChatError::Conflict(_))),
        "round {round}"
    );
}

/// A user's tokens are counted under their row's lock: two added at once, one short of
/// the cap, store one and refuse the other.
async fn tokens_added_at_once_stay_within_the_cap(store: Arc<dyn Store>) {
    for round in 0..10 {
        let alice = user(&store, &format!("capped{round}")).await;
        let capped = |hash: String| NewToken {
            cap: Some(2),
            ..new_token(alice.id, &hash, "t", None)
        };
        store
            .add_token(capped(format!("h{round}-0")))
            .await
            .unwrap();
        let add = |hash: String| {
            let (store, new) = (store.clone(), capped(hash));
            async move { store.add_token(new).await }
        };
        let (a, b) = race(
            round,
            add(format!("h{round}-a")),
            add(format!("h{round}-b")),
        )
        .await;
        one_made_one_over_the_cap(round, a, b);
        assert_eq!(store.tokens(alice.id).await.unwrap().len(), 2);
    }
}

/// A sign-in link's code is exchanged for a token once: the claim and the token are one
/// transaction, refused links (unknown, used, expired, deactivated user) store no token,
/// and of exchanges racing for one link exactly one signs in.
async fn sign_in_links_are_redeemed_once(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let later = Timestamp(i64::MAX / 2);
    let link = |user: UserId, hash: &str, expires_at: Timestamp| NewSignInCode {
        user_id: user,
        created_by: alice.id,
        code_hash: hash.into(),
        expires_at,
    };
    for (user, hash, at) in [
        (alice.id, "c-alice", later),
        (alice.id, "c-old", Timestamp(1)),
        (bob.id, "c-bob", later),
        (alice.id, "c-race", later),
    ] {
        store.add_sign_in_link(link(user, hash, at)).await.unwrap();
    }
    assert!(matches!(
        store.add_sign_in_link(link(bob.id, "c-alice", later)).await,
        Err(ChatError::Conflict(_))
    ));

    let redeem = |code: &'static str, token: &'static str| {
        let store = store.clone();
        async move {
            store
                .redeem_sign_in_link(code, token, "sign-in link")
                .await
                .unwrap()
        }
    };
    assert_eq!(redeem("c-none", "t-0").await, Redemption::Unknown);
    assert_eq!(redeem("c-old", "t-1").await, Redemption::Expired);
    let Redemption::SignedIn { user, token } = redeem("c-alice", "t-2").await else {
        panic!("the first exchange signs in");
    };
    assert_eq!(user.id, alice.id);
    assert_eq!(token.name, "sign-in link");
    assert_eq!(
        store.token_owner("t-2").await.unwrap().unwrap().user.id,
        alice.id
    );
    assert_eq!(redeem("c-alice", "t-3").await, Redemption::Used);
    assert_eq!(redeem("c-old", "t-4").await, Redemption::Expired);
    for refused in ["t-0", "t-1", "t-3", "t-4"] {
        assert_eq!(store.token_owner(refused).await.unwrap(), None, "{refused}");
    }

    // A deactivated user's link is refused and stays unused.
    store
        .set_deactivated(bob.id, Some(Timestamp(5)))
        .await
        .unwrap();
    assert_eq!(redeem("c-bob", "t-5").await, Redemption::Deactivated);
    assert_eq!(store.token_owner("t-5").await.unwrap(), None);
    store.set_deactivated(bob.id, None).await.unwrap();
    assert!(matches!(
        redeem("c-bob", "t-6").await,
        Redemption::SignedIn { .. }
    ));

    // Racing exchanges: one wins.
    const TOKENS: [&str; 8] = ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"];
    let tasks: Vec<_> = TOKENS
        .iter()
        .map(|token| tokio::spawn(redeem("c-race", token)))
        .collect();
    let mut signed_in = 0;
    for task in tasks {
        match task.await.unwrap() {
            Redemption::SignedIn { .. } => signed_in += 1,
            other => assert_eq!(other, Redemption::Used),
        }
    }
    assert_eq!(signed_in, 1);
    let alices = store.tokens(alice.id).await.unwrap();
    assert_eq!(alices.len(), 2, "{alices:?}");

    // Listed and revoked: only links that can still be used (the others of alice's are
    // used or expired).
    let now = Timestamp(100);
    let id = store
        .add_sign_in_link(link(alice.id, "c-revoked", later))
        .await
        .unwrap();
    let pending = store.sign_in_links(alice.id, now).await.unwrap();
    assert_eq!(pending.iter().map(|l| l.id).collect::<Vec<_>>(), [id]);
    assert_eq!(pending[0].created_by, alice.id);
    assert!(!store.delete_sign_in_link(bob.id, id, now).await.unwrap());
    assert!(store.delete_sign_in_link(alice.id, id, now).await.unwrap());
    assert!(!store.delete_sign_in_link(alice.id, id, now).await.unwrap());
    assert!(store.sign_in_links(alice.id, now).await.unwrap().is_empty());
    assert_eq!(redeem("c-revoked", "t-7").await, Redemption::Unknown);
}

async fn tokens_are_listed_revoked_and_touched(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let mut ids = Vec::new();
    for (hash, name) in [("h1", "one"), ("h2", "two"), ("h3", "three")] {
        ids.push(
            store
                .add_token(new_token(alice.id, hash, name, None))
                .await
                .unwrap()
                .id,
        );
    }
    let bobs = store
        .add_token(new_token(bob.id, "hb", "bob", None))
        .await
        .unwrap()
        .id;
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
    let names =
        |tokens: Vec<ApiToken>| -> Vec<String> { tokens.into_iter().map(|t| t.name).collect() };
    assert_eq!(
        names(store.tokens(alice.id).await.unwrap()),
        ["one", "two", "three"]
    );

    // Revoking is per user: bob's id under alice deletes nothing.
    assert!(!store.delete_token(alice.id, bobs).await.unwrap());
    assert!(store.delete_token(alice.id, ids[1]).await.unwrap());
    assert!(!store.delete_token(alice.id, ids[1]).await.unwrap());
    assert_eq!(
        names(store.tokens(alice.id).await.unwrap()),
        ["one", "three"]
    );
    assert_eq!(store.token_owner("h2").await.unwrap(), None);
    assert_eq!(names(store.tokens(bob.id).await.unwrap()), ["bob"]);
    // Whether a socket's token still stands: its owner's, not revoked.
    assert!(store.has_token(alice.id, ids[0]).await.unwrap());
    assert!(!store.has_token(alice.id, ids[1]).await.unwrap(), "revoked");
    assert!(!store.has_token(alice.id, bobs).await.unwrap(), "bob's");
    assert!(store.has_token(bob.id, bobs).await.unwrap());

    // Last use: recorded in one call, never moved back, unknown ids ignored.
    store
        .touch_tokens(&[
            (ids[0], Timestamp(2_000)),
            (ids[1], Timestamp(2_000)),
            (bobs, Timestamp(1_000)),
        ])
        .await
        .unwrap();
    store
        .touch_tokens(&[(ids[0], Timestamp(1_500))])
        .await
        .unwrap();
    let alices = store.tokens(alice.id).await.unwrap();
    assert_eq!(alices[0].last_used_at, Some(Timestamp(2_000)));
    assert_eq!(alices[1].last_used_at, None);
    store
        .touch_tokens(&[(ids[0], Timestamp(3_000))])
        .await
        .unwrap();
    assert_eq!(
        store.tokens(alice.id).await.unwrap()[0].last_used_at,
        Some(Timestamp(3_000))
    );
    assert_eq!(
        store.tokens(bob.id).await.unwrap()[0].last_used_at,
        Some(Timestamp(1_000))
    );
}

async fn users_are_paged_and_deactivated(store: Arc<dyn Store>) {
    let mut all = Vec::new();
    for name in ["u1", "u2", "u3", "u4", "u5"] {
        all.push(user(&store, name).await.id);
    }
    let page = |after: Option<UserId>, limit: u32| {
        let store = store.clone();
        async move {
            store
                .list_users(after, limit)
                .await
                .unwrap()
                .into_iter()
                .map(|u| u.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(None, 2).await, all[..2]);
    assert_eq!(page(Some(all[1]), 2).await, all[2..4]);
    assert_eq!(page(Some(all[3]), 2).await, all[4..]);
    assert!(page(Some(all[4]), 2).await.is_empty());

    let target = all[2];
    let hash = "h-u3";
    store
        .add_token(new_token(target, hash, "default", None))
        .await
        .unwrap();
    let off = store
        .set_deactivated(target, Some(Timestamp(5_000)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(off.deactivated_at, Some(Timestamp(5_000)));
    // Deactivating again keeps the first time.
    let again = store
        .set_deactivated(target, Some(Timestamp(9_000)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.deactivated_at, Some(Timestamp(5_000)));
    assert_eq!(store.user(target).await.unwrap().unwrap(), again);
    let listed = store.list_users(None, 10).await.unwrap();
    assert_eq!(listed[2].deactivated_at, Some(Timestamp(5_000)));
    assert!(
        listed
            .iter()
            .filter(|u| u.id != target)
            .all(|u| u.deactivated_at.is_none())
    );
    // The token still names its (deactivated) owner: refusing it is the service's call.
    let owner = store.token_owner(hash).await.unwrap().unwrap();
    assert_eq!(owner.user.deactivated_at, Some(Timestamp(5_000)));

    let on = store.set_deactivated(target, None).await.unwrap().unwrap();
    assert_eq!(on.deactivated_at, None);
    assert_eq!(
        store.set_deactivated(UserId(9_999), None).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .set_deactivated(UserId(9_999), Some(Timestamp(1)))
            .await
            .unwrap(),
        None
    );
}

async fn deactivated_agents_are_not_rotated_or_sent_webhooks(store: Arc<dyn Store>) {
    let (_owner, ws, ch) = setup(&store).await;
    let on = agent(&store, "on", Some("http://127.0.0.1:9/h")).await;
    let off = agent(&store, "off", Some("http://127.0.0.1:9/h")).await;
    for u in [&on, &off] {
        store.add_member(ws.id, u.id, Role::Member).await.unwrap();
        store.add_channel_member(ch.id, u.id).await.unwrap();
    }
    let now = Clock::system().now_ms();
    for (user, event) in [(on.id, "e1"), (off.id, "e1"), (off.id, "e2")] {
        store
            .enqueue_webhook(delivery(user, event, now))
            .await
            .unwrap();
    }
    store
        .set_deactivated(off.id, Some(Timestamp(now)))
        .await
        .unwrap();
    let agents: Vec<UserId> = store
        .agent_members(ch.id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(agents, [on.id]);
    // Still a member: deactivation keeps memberships.
    assert!(store.is_channel_member(ch.id, off.id).await.unwrap());

    let failed = store
        .fail_pending_webhooks(off.id, Timestamp(now + 1), "the agent was deactivated")
        .await
        .unwrap();
    assert_eq!(failed, 2);
    for d in store.webhook_deliveries(off.id, 10).await.unwrap() {
        assert_eq!(d.status, WebhookStatus::Failed, "{d:?}");
        assert_eq!(d.last_error.as_deref(), Some("the agent was deactivated"));
        assert_eq!(d.finished_at, Some(Timestamp(now + 1)));
    }
    let kept = store.webhook_deliveries(on.id, 10).await.unwrap();
    assert_eq!(kept[0].status, WebhookStatus::Pending);
    let due = store
        .claim_due_webhooks(
            Timestamp(now),
            Timestamp(now + 5_000),
            &ClaimLimits::total(10),
        )
        .await
        .unwrap();
    assert_eq!(due.iter().map(|d| d.user_id).collect::<Vec<_>>(), [on.id]);

    // A delivery queued after the deactivation gave up the pending ones (a send that
    // read the agents just before it) is given up when due, never claimed.
    store
        .enqueue_webhook(delivery(off.id, "e3", now))
        .await
        .unwrap();
    let due = store
        .claim_due_webhooks(
            Timestamp(now + 6_000),
            Timestamp(now + 11_000),
            &ClaimLimits::total(10),
        )
        .await
        .unwrap();
    assert_eq!(due.iter().map(|d| d.user_id).collect::<Vec<_>>(), [on.id]);
    let late = store.webhook_deliveries(off.id, 10).await.unwrap();
    assert_eq!(late[0].event_id, "e3");
    assert_eq!(late[0].status, WebhookStatus::Failed, "{late:?}");
    assert_eq!(late[0].last_error.as_deref(), Some(DEACTIVATED_WEBHOOK));

    // An attempt in flight when its agent is deactivated: a retry does not bring the
    // given-up delivery back; what did happen (delivered) is still recorded.
    let attempt = |n: i64| WebhookAttempt {
        attempt: n,
        at: Timestamp(now + 12_000),
        status_code: Some(500),
        error: None,
        duration_ms: 3,
    };
    let retry = AttemptOutcome::Retry {
        at: Timestamp(now + 13_000),
    };
    let on_event = due[0].id;
    store
        .set_deactivated(on.id, Some(Timestamp(now + 11_500)))
        .await
        .unwrap();
    store
        .fail_pending_webhooks(on.id, Timestamp(now + 11_500), DEACTIVATED_WEBHOOK)
        .await
        .unwrap();
    store
        .record_webhook_attempt(on_event, &attempt(2), retry)
        .await
        .unwrap();
    let kept = store.webhook_deliveries(on.id, 10).await.unwrap();
    assert_eq!(kept[0].status, WebhookStatus::Failed, "{kept:?}");
    let attempts: Vec<i64> = kept[0].attempt_log.iter().map(|a| a.attempt).collect();
    assert_eq!(attempts, [2], "the attempt is recorded");
    assert!(
        store
            .claim_due_webhooks(
                Timestamp(now + 20_000),
                Timestamp(now + 25_000),
                &ClaimLimits::total(10)
            )
            .await
            .unwrap()
            .is_empty()
    );
    store
        .record_webhook_attempt(on_event, &attempt(3), AttemptOutcome::Delivered)
        .await
        .unwrap();
    let kept = store.webhook_deliveries(on.id, 10).await.unwrap();
    assert_eq!(kept[0].status, WebhookStatus::Delivered, "{kept:?}");

    store.set_deactivated(off.id, None).await.unwrap();
    assert_eq!(store.agent_members(ch.id).await.unwrap().len(), 1);
    store.set_deactivated(on.id, None).await.unwrap();
    assert_eq!(store.agent_members(ch.id).await.unwrap().len(), 2);
}

async fn presence_columns(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let p = store.presence(alice.id).await.unwrap().unwrap();
    assert_eq!(p.user_id, alice.id);
    assert!(!p.online);
    assert_eq!(p.last_seen, None);
    assert_eq!(p.status_text, "");
    assert_eq!(store.presence(UserId(9_999)).await.unwrap(), None);

    let p = store.set_status_text(alice.id, "lunch").await.unwrap();
    assert_eq!(p.status_text, "lunch");
    let p = store
        .set_last_seen(alice.id, Timestamp(1_700_000_000_123))
        .await
        .unwrap();
    assert_eq!(p.last_seen, Some(Timestamp(1_700_000_000_123)));
    assert_eq!(p.status_text, "lunch");
    assert_eq!(store.presence(alice.id).await.unwrap().unwrap(), p);
    assert_eq!(
        store.user(alice.id).await.unwrap().unwrap().status_text,
        "lunch"
    );

    assert!(matches!(
        store.set_status_text(UserId(9_999), "x").await,
        Err(ChatError::NotFound(_))
    ));
    assert!(matches!(
        store.set_last_seen(UserId(9_999), Timestamp(1)).await,
        Err(ChatError::NotFound(_))
    ));
}

/// The lookups a connect storm coalesces (`service/lookups.rs`) take any number of keys
/// in one statement: each key found once, unknown keys left out, any number of keys.
async fn lookups_of_many_keys(store: Arc<dyn Store>) {
    let (alice, ws, ch) = setup(&store).await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    store.add_member(ws.id, bob.id, Role::Member).await.unwrap();
    for (owner, hash) in [(alice.id, "h-a1"), (alice.id, "h-a2"), (bob.id, "h-b")] {
        store
            .add_token(new_token(owner, hash, hash, None))
            .await
            .unwrap();
    }

    let hashes: Vec<String> = ["h-b", "nope", "h-a1", "h-a2"].map(Into::into).to_vec();
    let mut owners: Vec<(String, UserId)> = store
        .token_owners(&hashes)
        .await
        .unwrap()
        .into_iter()
        .map(|(hash, owner)| (hash, owner.user.id))
        .collect();
    owners.sort();
    assert_eq!(
        owners,
        [
            ("h-a1".to_owned(), alice.id),
            ("h-a2".to_owned(), alice.id),
            ("h-b".to_owned(), bob.id)
        ]
    );
    assert!(store.token_owners(&[]).await.unwrap().is_empty());

    // 1,200 keys (the coalescer asks for at most 500; the statement has no limit),
    // one of them twice.
    let mut users: Vec<UserId> = (100_000..101_196).map(UserId).collect();
    users.extend([carol.id, bob.id, alice.id, bob.id]);
    let memberships = store.memberships_of_users(&users).await.unwrap();
    assert_eq!(memberships.len(), 2, "{memberships:?}");
    assert_eq!(memberships[&alice.id], (vec![ws.id], vec![ch.id]));
    assert_eq!(memberships[&bob.id], (vec![ws.id], vec![]), "found once");
    assert!(store.memberships_of_users(&[]).await.unwrap().is_empty());

    let at = Timestamp(1_700_000_000_000);
    let mut seen = store
        .set_last_seen_of(&[carol.id, UserId(9_999), alice.id, carol.id], at)
        .await
        .unwrap();
    seen.sort_by_key(|p| p.user_id);
    assert_eq!(
        seen.iter()
            .map(|p| (p.user_id, p.last_seen))
            .collect::<Vec<_>>(),
        [(alice.id, Some(at)), (carol.id, Some(at))]
    );
    assert_eq!(
        store.presence(bob.id).await.unwrap().unwrap().last_seen,
        None
    );
    assert!(store.set_last_seen_of(&[], at).await.unwrap().is_empty());
}

// ---- workspaces ---------------------------------------------------------------------

/// A channel's roll-up writes all its streams at once: each streaming message gets its
/// text and its next `seq`; one that is not streaming (never was, or ended) gets `None`
/// and is left as it was.
async fn a_rollup_appends_to_its_streams_in_one_transaction(store: Arc<dyn Store>) {
    let (alice, _, ch) = setup(&store).await;
    let open = |text: &str| NewMessage {
        streaming: true,
        ..new_message(ch.id, alice.id, text)
    };
    let first = store.insert_message(open("a")).await.unwrap().message;
    let second = store.insert_message(open("")).await.unwrap().message;
    let plain = send(&store, ch.id, alice.id, "plain").await;
    let at = Timestamp(1_000);

    let seqs = store
        .append_streams(&[(first.id, "b"), (plain.id, "x"), (second.id, "1")], at)
        .await
        .unwrap();
    assert_eq!(seqs, [Some(1), None, Some(1)]);
    let seqs = store
        .append_streams(&[(second.id, "2"), (first.id, "c")], at)
        .await
        .unwrap();
    assert_eq!(seqs, [Some(2), Some(2)]);
    assert_eq!(store.append_streams(&[], at).await.unwrap(), []);

    store
        .end_stream_logged(first.id, MessageState::Complete, None, "d", no_events())
        .await
        .unwrap()
        .unwrap();
    let seqs = store
        .append_streams(&[(first.id, "e"), (second.id, "3")], at)
        .await
        .unwrap();
    assert_eq!(seqs, [None, Some(3)]);

    let text = |m: Option<Message>| m.map(|m| (m.text, m.seq));
    assert_eq!(
        text(store.message(first.id).await.unwrap()),
        Some(("abcd".into(), 2))
    );
    assert_eq!(
        text(store.message(second.id).await.unwrap()),
        Some(("123".into(), 3))
    );
    assert_eq!(
        text(store.message(plain.id).await.unwrap()),
        Some(("plain".into(), 0))
    );
}

async fn workspaces_members_and_roles(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    let acme = store.create_workspace("acme", alice.id).await.unwrap();
    let beta = store.create_workspace("beta", bob.id).await.unwrap();
    assert_eq!(acme.name, "acme");
    assert_eq!(acme.created_by, alice.id);
    assert_eq!(store.workspace(acme.id).await.unwrap(), Some(acme.clone()));
    assert_eq!(store.workspace(WorkspaceId(9_999)).await.unwrap(), None);

    assert_eq!(
        store.member_role(acme.id, alice.id).await.unwrap(),
        Some(Role::Owner)
    );
    assert_eq!(store.member_role(acme.id, bob.id).await.unwrap(), None);

    assert!(
        store
            .add_member(acme.id, bob.id, Role::Member)
            .await
            .unwrap()
    );
    assert!(
        store
            .add_member(acme.id, carol.id, Role::Guest)
            .await
            .unwrap()
    );
    // Adding is insert-only: an existing member keeps their role.
    assert!(
        !store
            .add_member(acme.id, bob.id, Role::Admin)
            .await
            .unwrap()
    );
    assert_eq!(
        store.member_role(acme.id, bob.id).await.unwrap(),
        Some(Role::Member)
    );
    assert!(
        store
            .set_member_role(acme.id, bob.id, Role::Member, Role::Admin)
            .await
            .unwrap()
    );

    let of_bob = store.workspaces_of(bob.id).await.unwrap();
    assert_eq!(
        of_bob
            .iter()
            .map(|m| (m.workspace.id, m.role))
            .collect::<Vec<_>>(),
        vec![(acme.id, Role::Admin), (beta.id, Role::Owner)],
        "ordered by workspace id"
    );
    assert_eq!(of_bob[0].workspace, acme);
    assert!(store.workspaces_of(UserId(9_999)).await.unwrap().is_empty());

    store.set_status_text(carol.id, "away").await.unwrap();
    store.set_last_seen(carol.id, Timestamp(42)).await.unwrap();
    let members = store.members(acme.id).await.unwrap();
    assert_eq!(
        members
            .iter()
            .map(|m| (m.user.id, m.role))
            .collect::<Vec<_>>(),
        vec![
            (alice.id, Role::Owner),
            (bob.id, Role::Admin),
            (carol.id, Role::Guest)
        ],
        "ordered by user id"
    );
    let carol_member = &members[2];
    assert_eq!(carol_member.user.name, "carol");
    assert_eq!(carol_member.presence.last_seen, Some(Timestamp(42)));
    assert_eq!(carol_member.presence.status_text, "away");
    assert!(!carol_member.presence.online);
}

async fn concurrent_add_member_reports_new_once(store: Arc<dyn Store>) {
    let owner = user(&store, "owner").await;
    let ws = store.create_workspace("acme", owner.id).await.unwrap();
    for round in 0..5 {
        let joiner = user(&store, &format!("joiner{round}")).await;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.add_member(ws.id, joiner.id, Role::Member).await })
            })
            .collect();
        let mut new = 0;
        for task in tasks {
            if task.await.unwrap().unwrap() {
                new += 1;
            }
        }
        assert_eq!(new, 1, "exactly one of the racing adds is the new member");
    }
    assert_eq!(store.members(ws.id).await.unwrap().len(), 6);
}

async fn role_changes_compare_and_keep_an_owner(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let stranger = user(&store, "stranger").await;
    let ws = store.create_workspace("acme", alice.id).await.unwrap();
    store.add_member(ws.id, bob.id, Role::Member).await.unwrap();
    let role = |u: UserId| {
        let store = store.clone();
        async move { store.member_role(ws.id, u).await.unwrap() }
    };

    // A stale `from` (or a non-member) changes nothing.
    assert!(
        !store
            .set_member_role(ws.id, bob.id, Role::Admin, Role::Guest)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_member_role(ws.id, stranger.id, Role::Member, Role::Admin)
            .await
            .unwrap()
    );
    assert_eq!(role(bob.id).await, Some(Role::Member));
    assert_eq!(role(stranger.id).await, None);

    // The only owner cannot be demoted; nothing changes.
    let err = store
        .set_member_role(ws.id, alice.id, Role::Owner, Role::Admin)
        .await
        .unwrap_err();
    assert!(matches!(err, ChatError::Conflict(_)), "{err:?}");
    assert_eq!(role(alice.id).await, Some(Role::Owner));

    // With a second owner, either may step down, but not both.
    assert!(
        store
            .set_member_role(ws.id, bob.id, Role::Member, Role::Owner)
            .await
            .unwrap()
    );
    assert!(
        store
            .set_member_role(ws.id, alice.id, Role::Owner, Role::Guest)
            .await
            .unwrap()
    );
    let err = store
        .set_member_role(ws.id, bob.id, Role::Owner, Role::Member)
        .await
        .unwrap_err();
    assert!(matches!(err, ChatError::Conflict(_)), "{err:?}");
    assert_eq!(role(alice.id).await, Some(Role::Guest));
    assert_eq!(role(bob.id).await, Some(Role::Owner));

    // Neither can the last owner be removed.
    let err = store
        .remove_member(ws.id, bob.id, Role::Owner)
        .await
        .unwrap_err();
    assert!(matches!(err, ChatError::Conflict(_)), "{err:?}");
    assert_eq!(role(bob.id).await, Some(Role::Owner));
    // A removal guarded by a stale role changes nothing.
    assert_eq!(
        store
            .remove_member(ws.id, alice.id, Role::Member)
            .await
            .unwrap(),
        None
    );
    assert_eq!(role(alice.id).await, Some(Role::Guest));
}

/// Owners demoting and removing each other at once: the workspace never ends up
/// without an owner, however the changes interleave (PostgreSQL: across connections).
async fn concurrent_owner_changes_keep_an_owner(store: Arc<dyn Store>) {
    for round in 0..6 {
        let owners = [
            user(&store, &format!("a{round}")).await,
            user(&store, &format!("b{round}")).await,
            user(&store, &format!("c{round}")).await,
        ];
        let ws = store
            .create_workspace(&format!("ws{round}"), owners[0].id)
            .await
            .unwrap();
        for o in &owners[1..] {
            store.add_member(ws.id, o.id, Role::Owner).await.unwrap();
        }
        let tasks: Vec<_> = owners
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let (store, id) = (store.clone(), o.id);
                tokio::spawn(async move {
                    if (i + round) % 2 == 0 {
                        store
                            .set_member_role(ws.id, id, Role::Owner, Role::Member)
                            .await
                            .map(|changed| changed as usize)
                    } else {
                        store
                            .remove_member(ws.id, id, Role::Owner)
                            .await
                            .map(|left| left.is_some() as usize)
                    }
                })
            })
            .collect();
        let (mut done, mut refused) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                Ok(n) => done += n,
                Err(ChatError::Conflict(_)) => refused += 1,
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
        assert_eq!((done, refused), (2, 1), "round {round}");
        let remaining: Vec<Role> = store
            .members(ws.id)
            .await
            .unwrap()
            .iter()
            .map(|m| m.role)
            .filter(|r| *r == Role::Owner)
            .collect();
        assert_eq!(remaining.len(), 1, "round {round}: exactly one owner left");
    }
}

async fn a_channel_has_only_members_of_its_workspace(store: Arc<dyn Store>) {
    let (owner, ws, general) = setup(&store).await;
    let bob = user(&store, "bob").await;
    let refused = store.add_channel_member(general.id, bob.id).await;
    assert!(
        matches!(&refused, Err(ChatError::BadRequest(why)) if why.contains("not a member of this workspace")),
        "{refused:?}"
    );
    assert!(!store.is_channel_member(general.id, bob.id).await.unwrap());
    let new = |members: Vec<UserId>| NewChannel {
        workspace_id: ws.id,
        name: "side".into(),
        topic: String::new(),
        kind: ChannelKind::Private,
        policy: Policy::All,
        created_by: owner.id,
        members,
        dm_key: None,
        settings: Default::default(),
    };
    let refused = store.create_channel(new(vec![owner.id, bob.id])).await;
    assert!(
        matches!(&refused, Err(ChatError::BadRequest(why)) if why.contains(&format!("user {} ", bob.id))),
        "{refused:?}"
    );
    // Nothing of the refused channel stays: its name is free.
    store.create_channel(new(vec![owner.id])).await.unwrap();
    // A server admin acts as an owner of every workspace without being a member.
    let admin = store
        .create_user(NewUser {
            name: "root".into(),
            display_name: "Root".into(),
            kind: UserKind::Human,
            webhook_url: None,
            is_admin: true,
        })
        .await
        .unwrap();
    assert!(
        store
            .add_channel_member(general.id, admin.id)
            .await
            .unwrap()
    );
    store.add_member(ws.id, bob.id, Role::Member).await.unwrap();
    assert!(store.add_channel_member(general.id, bob.id).await.unwrap());
}

/// Runs `a` and `b` at once, `a` started first in even rounds and `b` in odd ones, so
/// that in a scenario of two racing changes each commits first in some rounds.
async fn race<A, B>(round: usize, a: A, b: B) -> (A::Output, B::Output)
where
    A: Future + Send + 'static,
    A::Output: Send + 'static,
    B: Future + Send + 'static,
    B::Output: Send + 'static,
{
    let (a, b) = if round.is_multiple_of(2) {
        let a = tokio::spawn(a);
        (a, tokio::spawn(b))
    } else {
        let b = tokio::spawn(b);
        (tokio::spawn(a), b)
    };
    (a.await.unwrap(), b.await.unwrap())
}

/// A user's workspace creations are counted under their row's lock: two at once, one
/// short of the cap, make one workspace and refuse the other.
async fn workspace_creations_at_once_stay_within_the_cap(store: Arc<dyn Store>) {
    for round in 0..10 {
        let alice = user(&store, &format!("alice{round}")).await;
        let cap = Some(2);
        store
            .create_workspace_logged("first", (alice.id, cap), no_events())
            .await
            .unwrap();
        let create = |name: &'static str| {
            let store = store.clone();
            async move {
                store
                    .create_workspace_logged(name, (alice.id, cap), no_events())
                    .await
            }
        };
        let (a, b) = race(round, create("a"), create("b")).await;
        one_made_one_over_the_cap(round, a, b);
        assert_eq!(store.workspaces_of(alice.id).await.unwrap().len(), 2);
    }
}

/// Two owners removing (or demoting) each other at the same moment, each checked as an
/// owner before the other's change committed: one change is made, and the other is
/// refused, since its maker is no owner any more when it would be made (a third owner
/// stays, so the last-owner rule is not what stops it).
/// A public channel's creation lists the workspace's guests that are not its first
/// members (its `channel.created` skips them); a guest arriving at the same time is
/// either listed or joins the workspace's order after the creation.
async fn a_public_channels_creation_lists_the_guests_it_is_not_for(store: Arc<dyn Store>) {
    use chorus_realtime::{Publish, Scope};

    let (owner, ws, _) = setup(&store).await;
    let ws_scope = Scope::parse(&format!("workspace:{}", ws.id.0)).unwrap();
    let member = user(&store, "member").await;
    let guest = user(&store, "guest").await;
    let invited = user(&store, "invited").await;
    store
        .add_member(ws.id, member.id, Role::Member)
        .await
        .unwrap();
    store
        .add_member(ws.id, guest.id, Role::Guest)
        .await
        .unwrap();
    store
        .add_member(ws.id, invited.id, Role::Guest)
        .await
        .unwrap();
    let other = store.create_workspace("other", owner.id).await.unwrap();
    let elsewhere = user(&store, "elsewhere").await;
    store
        .add_member(other.id, elsewhere.id, Role::Guest)
        .await
        .unwrap();

    let seen = Arc::new(std::sync::Mutex::new(None::<Vec<UserId>>));
    let create = |name: String, kind: ChannelKind, members: Vec<UserId>| {
        let (store, seen, ws_scope) = (store.clone(), seen.clone(), ws_scope.clone());
        async move {
            let (_, logged) = store
                .create_channel_logged(
                    NewChannel {
                        workspace_id: ws.id,
                        name,
                        topic: String::new(),
                        kind,
                        policy: Policy::All,
                        created_by: owner.id,
                        members,
                        dm_key: None,
                        settings: Default::default(),
                    },
                    Box::new(move |created: &CreatedChannel| {
                        *seen.lock().unwrap() = Some(created.guests.clone());
                        vec![Publish::new(ws_scope.clone(), "channel.created", &1)].into()
                    }),
                )
                .await
                .unwrap();
            logged[0].offset.unwrap()
        }
    };
    let guests = || seen.lock().unwrap().take().unwrap();
    create("plans".into(), ChannelKind::Public, vec![owner.id]).await;
    assert_eq!(
        guests(),
        [guest.id, invited.id],
        "this workspace's guests only"
    );
    create(
        "with-guest".into(),
        ChannelKind::Public,
        vec![owner.id, invited.id],
    )
    .await;
    assert_eq!(guests(), [guest.id], "a first member is not left out");
    create("hidden".into(), ChannelKind::Private, vec![owner.id]).await;
    assert!(
        guests().is_empty(),
        "only a public channel's creation lists them"
    );

    for round in 0..20 {
        let newcomer = user(&store, &format!("newcomer{round}")).await;
        let arrive = {
            let (store, ws_scope) = (store.clone(), ws_scope.clone());
            async move {
                let logged = store
                    .add_member_logged(
                        ws.id,
                        newcomer.id,
                        Role::Guest,
                        events_only(move |()| {
                            vec![Publish::new(ws_scope.clone(), "member.joined", &1)]
                        }),
                    )
                    .await
                    .unwrap()
                    .unwrap();
                logged[0].offset.unwrap()
            }
        };
        let creating = create(format!("race{round}"), ChannelKind::Public, vec![owner.id]);
        let (joined_at, created_at) = race(round, arrive, creating).await;
        let listed = guests().contains(&newcomer.id);
        assert!(
            listed || joined_at > created_at,
            "round {round}: the guest joined at {joined_at}, before the creation at \
             {created_at}, and was not listed"
        );
    }
}

async fn owners_acting_on_each_other_at_once_do_not_both_succeed(store: Arc<dyn Store>) {
    let (third, ws, _) = setup(&store).await;
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let acting = |u: &User| {
        Some(Acting {
            user: u.id,
            least: Role::Owner,
        })
    };
    for round in 0..20 {
        for u in [&a, &b] {
            store.remove_member(ws.id, u.id, Role::Owner).await.unwrap();
            store.remove_member(ws.id, u.id, Role::Admin).await.unwrap();
            store.add_member(ws.id, u.id, Role::Owner).await.unwrap();
        }
        let demote = round % 4 >= 2;
        let act = |by: &User, on: &User| {
            let (store, by, on) = (store.clone(), acting(by), on.id);
            async move {
                if demote {
                    store
                        .set_member_role_logged(
                            ws.id,
                            on,
                            Role::Owner,
                            Role::Admin,
                            by,
                            no_events(),
                        )
                        .await
                        .map(|done| done.is_some())
                } else {
                    store
                        .remove_member_logged(
                            ws.id,
                            on,
                            Role::Owner,
                            by,
                            events_only(|_| Vec::new()),
                        )
                        .await
                        .map(|done| done.is_some())
                }
            }
        };
        let (ab, ba) = race(round, act(&a, &b), act(&b, &a)).await;
        let made = [&ab, &ba].iter().filter(|r| matches!(r, Ok(true))).count();
        assert_eq!(made, 1, "round {round} (demote: {demote}): {ab:?} {ba:?}");
        assert!(
            [&ab, &ba]
                .iter()
                .any(|r| matches!(r, Err(ChatError::Forbidden(_)))),
            "round {round}: {ab:?} {ba:?}"
        );
    }
    // Not racing: someone made an admin since their check may not remove an owner, and
    // a server admin (no `Acting`) is not asked.
    for u in [&a, &b] {
        store.remove_member(ws.id, u.id, Role::Owner).await.unwrap();
        store.remove_member(ws.id, u.id, Role::Admin).await.unwrap();
    }
    store.add_member(ws.id, a.id, Role::Admin).await.unwrap();
    store.add_member(ws.id, b.id, Role::Owner).await.unwrap();
    let refused = store
        .remove_member_logged(
            ws.id,
            b.id,
            Role::Owner,
            acting(&a),
            events_only(|_| Vec::new()),
        )
        .await;
    assert!(
        matches!(refused, Err(ChatError::Forbidden(_))),
        "{refused:?}"
    );
    let by_server_admin = store
        .remove_member_logged(ws.id, b.id, Role::Owner, None, events_only(|_| Vec::new()))
        .await
        .unwrap();
    assert!(by_server_admin.is_some());
    assert_eq!(
        store.member_role(ws.id, third.id).await.unwrap(),
        Some(Role::Owner)
    );
}

/// The workspace's owner, `bob` (a member of it), and a private channel `secret` of the
/// owner's that bob is not in yet.
async fn bob_outside_a_secret(store: &Arc<dyn Store>) -> (User, User, Channel) {
    let (owner, ws, _) = setup(store).await;
    let bob = user(store, "bob").await;
    store.add_member(ws.id, bob.id, Role::Member).await.unwrap();
    let secret = channel(
        store,
        ws.id,
        "secret",
        ChannelKind::Private,
        owner.id,
        &[owner.id],
    )
    .await;
    (owner, bob, secret)
}

/// `user` leaving `ch`, a `member.left` logged on `scope` with it: whether they were in
/// it, and what was logged.
fn leaving(
    store: &Arc<dyn Store>,
    ch: ChannelId,
    user: UserId,
    scope: &chorus_realtime::Scope,
) -> impl Future<Output = chorus_chat::error::Result<(bool, Vec<chorus_realtime::Publish>)>>
+ Send
+ 'static {
    let (store, scope) = (store.clone(), scope.clone());
    let events = events_only(move |_: &()| {
        vec![chorus_realtime::Publish::new(
            scope.clone(),
            "member.left",
            &(),
        )]
    });
    async move { store.remove_channel_member_logged(ch, user, events).await }
}

/// A message checked against the channel's members before its author's leave commits
/// (the service's check, through its cache, or another node's) must not be stored
/// after the leave: either it is logged before the author's `member.left`, or it is
/// refused. A plain message (SQLite's group commit) and one with a thread (the
/// transaction of its own), alternately.
async fn a_post_racing_its_authors_leave_comes_before_it_or_not_at_all(store: Arc<dyn Store>) {
    use chorus_realtime::{Publish, Scope};
    let (owner, bob, secret) = bob_outside_a_secret(&store).await;
    let root = send(&store, secret.id, owner.id, "root").await;
    // Not racing: a departed author's plain message and reply are refused.
    for thread in [None, Some(root.id)] {
        let mut new = new_message(secret.id, bob.id, "after the leave");
        new.thread_id = thread;
        let refused = store.insert_message(new).await.map(|i| i.message);
        assert!(
            matches!(refused, Err(ChatError::Forbidden(_))),
            "{thread:?}: {refused:?}"
        );
    }
    let scope = Scope::parse(&format!("channel:{}", secret.id.0)).unwrap();
    for round in 0..20 {
        store.add_channel_member(secret.id, bob.id).await.unwrap();
        let post = {
            let (store, scope) = (store.clone(), scope.clone());
            let mut new = new_message(secret.id, bob.id, "last words");
            new.thread_id = (round % 4 >= 2).then_some(root.id);
            let events = events_only(move |_: &chorus_chat::store::Inserted| {
                vec![Publish::new(scope.clone(), "message.created", &())]
            });
            async move { store.insert_message_logged(new, events).await }
        };
        let leave = leaving(&store, secret.id, bob.id, &scope);
        let (posted, left) = race(round, post, leave).await;
        let (was, left) = left.unwrap();
        assert!(was, "round {round}: bob was in the channel");
        match posted {
            Ok((_, posted)) => assert!(
                posted[0].offset < left[0].offset,
                "round {round}: posted after the leave ({:?}, left at {:?})",
                posted[0].offset,
                left[0].offset
            ),
            Err(ChatError::Forbidden(_)) => {}
            Err(err) => panic!("round {round}: {err:?}"),
        }
    }
}

/// Completing a stream is posting: one racing its author's leave is written before the
/// leave or refused, and an abort (not a post) still ends a departed author's stream.
async fn a_completion_racing_its_authors_leave_comes_before_it_or_not_at_all(
    store: Arc<dyn Store>,
) {
    use chorus_realtime::{Publish, Scope};
    let (_, bob, secret) = bob_outside_a_secret(&store).await;
    let open_stream = |text: &str| {
        let mut new = new_message(secret.id, bob.id, text);
        new.streaming = true;
        let store = store.clone();
        async move { store.insert_message(new).await.unwrap().message.id }
    };
    let scope = Scope::parse(&format!("channel:{}", secret.id.0)).unwrap();
    for round in 0..20 {
        store.add_channel_member(secret.id, bob.id).await.unwrap();
        let id = open_stream("so far").await;
        let complete = {
            let (store, scope) = (store.clone(), scope.clone());
            let events =
                events_only(move |_: &Message| vec![Publish::new(scope.clone(), "completed", &())]);
            async move {
                store
                    .end_stream_logged(id, MessageState::Complete, Some("last words"), "", events)
                    .await
            }
        };
        let leave = leaving(&store, secret.id, bob.id, &scope);
        let (completed, left) = race(round, complete, leave).await;
        let (was, left) = left.unwrap();
        assert!(was, "round {round}: bob was in the channel");
        match completed {
            Ok(Some((_, completed))) => assert!(
                completed[0].offset < left[0].offset,
                "round {round}: completed after the leave ({:?}, left at {:?})",
                completed[0].offset,
                left[0].offset
            ),
            Err(ChatError::Forbidden(_)) => {
                let aborted = store
                    .end_stream_logged(id, MessageState::Aborted, None, "", no_events())
                    .await
                    .unwrap();
                assert!(aborted.is_some(), "round {round}: an abort still ends it");
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
}

/// `id`'s delete, a `message.deleted` logged on `scope` with it.
fn deleting(
    store: &Arc<dyn Store>,
    id: MessageId,
    scope: &chorus_realtime::Scope,
) -> impl Future<
    Output = chorus_chat::error::Result<(
        chorus_chat::store::Deletion,
        Vec<chorus_realtime::Publish>,
    )>,
> + Send
+ 'static {
    let (store, scope) = (store.clone(), scope.clone());
    let events = events_only(move |_: &chorus_chat::store::Deletion| {
        vec![chorus_realtime::Publish::new(
            scope.clone(),
            "message.deleted",
            &(),
        )]
    });
    async move { store.delete_message_logged(id, events).await }
}

/// `by` pinning `id` in `ch`, a `message.pinned` logged on `scope` if the pin is new.
fn pinning(
    store: &Arc<dyn Store>,
    (ch, id): (ChannelId, MessageId),
    by: UserId,
    scope: &chorus_realtime::Scope,
) -> impl Future<
    Output = chorus_chat::error::Result<(
        (chorus_chat::model::Pin, bool),
        Vec<chorus_realtime::Publish>,
    )>,
> + Send
+ 'static {
    let (store, scope) = (store.clone(), scope.clone());
    let events = events_only(move |(_, created): &(chorus_chat::model::Pin, bool)| {
        let pinned = chorus_realtime::Publish::new(scope.clone(), "message.pinned", &());
        if *created { vec![pinned] } else { Vec::new() }
    });
    async move { store.pin_logged(ch, id, by, events).await }
}

/// `by` reacting `emoji` to `id` (`add`) or taking that reaction back, a
/// `reaction.added` / `reaction.removed` logged on `scope` if that changed something.
fn reacting(
    store: &Arc<dyn Store>,
    (id, add): (MessageId, bool),
    by: UserId,
    emoji: &str,
    scope: &chorus_realtime::Scope,
) -> impl Future<Output = chorus_chat::error::Result<(bool, Vec<chorus_realtime::Publish>)>>
+ Send
+ 'static {
    let (store, scope, emoji) = (store.clone(), scope.clone(), emoji.to_owned());
    let kind = if add {
        "reaction.added"
    } else {
        "reaction.removed"
    };
    let events = events_only(move |&changed: &bool| {
        let event = chorus_realtime::Publish::new(scope.clone(), kind, &());
        if changed { vec![event] } else { Vec::new() }
    });
    async move { store.set_reaction_logged(id, by, &emoji, add, events).await }
}

/// `by` unpinning `id` in `ch`, a `message.unpinned` logged on `scope` if it was pinned.
fn unpinning(
    store: &Arc<dyn Store>,
    (ch, id): (ChannelId, MessageId),
    by: UserId,
    scope: &chorus_realtime::Scope,
) -> impl Future<Output = chorus_chat::error::Result<(bool, Vec<chorus_realtime::Publish>)>>
+ Send
+ 'static {
    let (store, scope) = (store.clone(), scope.clone());
    let events = events_only(move |&unpinned: &bool| {
        let event = chorus_realtime::Publish::new(scope.clone(), "message.unpinned", &());
        if unpinned { vec![event] } else { Vec::new() }
    });
    async move { store.unpin_logged(ch, id, by, events).await }
}

/// A pin checked against its message before the message's delete commits (the
/// service's check, or another node's) must not land on the tombstone: either it is
/// logged before the `message.deleted` and the delete takes it away, or it is refused
/// as not found. Nothing is left to list or count.
async fn a_pin_racing_the_messages_delete_leaves_no_pin_on_a_tombstone(store: Arc<dyn Store>) {
    use chorus_realtime::Scope;
    let (owner, _, ch) = setup(&store).await;
    let scope = Scope::parse(&format!("channel:{}", ch.id.0)).unwrap();
    for round in 0..20 {
        let m = send(&store, ch.id, owner.id, "short-lived").await;
        let pin = pinning(&store, (ch.id, m.id), owner.id, &scope);
        let delete = deleting(&store, m.id, &scope);
        let (pinned, deleted) = race(round, pin, delete).await;
        let (deletion, deleted) = deleted.unwrap();
        match pinned {
            Ok(((_, created), pinned)) => {
                assert!(created, "round {round}: a new pin");
                assert!(
                    pinned[0].offset < deleted[0].offset,
                    "round {round}: pinned after the delete ({:?}, deleted at {:?})",
                    pinned[0].offset,
                    deleted[0].offset
                );
                assert!(deletion.unpinned, "round {round}: the delete unpinned it");
            }
            Err(ChatError::NotFound(_)) => {}
            Err(err) => panic!("round {round}: {err:?}"),
        }
        let tomb = store.message(m.id).await.unwrap().unwrap();
        assert!(tomb.deleted, "round {round}");
        assert!(!tomb.pinned, "round {round}: a pin on the tombstone");
    }
    assert_eq!(store.pins(ch.id).await.unwrap(), Vec::new());
    assert_eq!(store.count_pins(ch.id).await.unwrap(), 0);
}

/// A reaction checked against its message before the message's delete commits must
/// not land on the tombstone: logged before the `message.deleted` (which takes it
/// away), or refused as not found.
async fn a_reaction_racing_the_messages_delete_leaves_none_on_a_tombstone(store: Arc<dyn Store>) {
    use chorus_realtime::Scope;
    let (owner, _, ch) = setup(&store).await;
    let scope = Scope::parse(&format!("channel:{}", ch.id.0)).unwrap();
    for round in 0..20 {
        let m = send(&store, ch.id, owner.id, "short-lived").await;
        let react = reacting(&store, (m.id, true), owner.id, "👍", &scope);
        let delete = deleting(&store, m.id, &scope);
        let (reacted, deleted) = race(round, react, delete).await;
        let (_, deleted) = deleted.unwrap();
        match reacted {
            Ok((added, reacted)) => {
                assert!(added, "round {round}: a new reaction");
                assert!(
                    reacted[0].offset < deleted[0].offset,
                    "round {round}: reacted after the delete ({:?}, deleted at {:?})",
                    reacted[0].offset,
                    deleted[0].offset
                );
            }
            Err(ChatError::NotFound(_)) => {}
            Err(err) => panic!("round {round}: {err:?}"),
        }
        let tomb = store.message(m.id).await.unwrap().unwrap();
        assert!(tomb.deleted, "round {round}");
        assert_eq!(
            tomb.reactions,
            Vec::new(),
            "round {round}: on the tombstone"
        );
    }
}

/// A reaction checked against the channel's readers before its reactor's leave (of a
/// private channel) commits must not be stored after the leave: either it is logged
/// before the `member.left`, or it is refused; a refused one leaves nothing.
async fn a_reaction_racing_the_reactors_leave_comes_before_it_or_not_at_all(store: Arc<dyn Store>) {
    use chorus_realtime::Scope;
    let (owner, bob, secret) = bob_outside_a_secret(&store).await;
    let m = send(&store, secret.id, owner.id, "react to me").await;
    // Not racing: an outsider's reaction is refused.
    let refused = store.add_reaction(m.id, bob.id, "👀").await;
    assert!(
        matches!(refused, Err(ChatError::Forbidden(_))),
        "{refused:?}"
    );
    let scope = Scope::parse(&format!("channel:{}", secret.id.0)).unwrap();
    for round in 0..20 {
        store.add_channel_member(secret.id, bob.id).await.unwrap();
        let emoji = format!("👍{round}");
        let react = reacting(&store, (m.id, true), bob.id, &emoji, &scope);
        let leave = leaving(&store, secret.id, bob.id, &scope);
        let (reacted, left) = race(round, react, leave).await;
        let kept = before_the_leave(round, "reacted", reacted, left);
        let message = store.message(m.id).await.unwrap().unwrap();
        let stored = message.reactions.iter().any(|r| r.emoji == emoji);
        assert_eq!(stored, kept, "round {round}: stored as answered");
    }
}

/// What a change (a reaction or a pin, added or taken back) racing its maker's leave
/// came to: made (it changed something), its event logged before the leave's; or
/// refused as the maker's no more. Whether it was made.
fn before_the_leave(
    round: usize,
    what: &str,
    added: chorus_chat::error::Result<(bool, Vec<chorus_realtime::Publish>)>,
    left: chorus_chat::error::Result<(bool, Vec<chorus_realtime::Publish>)>,
) -> bool {
    let (was, left) = left.unwrap();
    assert!(was, "round {round}: bob was in the channel");
    match added {
        Ok((changed, added)) => {
            assert!(changed, "round {round}: a change");
            assert!(
                added[0].offset < left[0].offset,
                "round {round}: {what} after the leave ({:?}, left at {:?})",
                added[0].offset,
                left[0].offset
            );
            true
        }
        Err(ChatError::Forbidden(_)) => false,
        Err(err) => panic!("round {round}: {err:?}"),
    }
}

/// A pin by a member racing their leave is pinned before the leave or not at all.
async fn a_pin_racing_the_pinners_leave_comes_before_it_or_not_at_all(store: Arc<dyn Store>) {
    use chorus_realtime::Scope;
    let (owner, bob, secret) = bob_outside_a_secret(&store).await;
    let m = send(&store, secret.id, owner.id, "pin me").await;
    // Not racing: an outsider's pin is refused.
    let refused = store.pin(secret.id, m.id, bob.id).await;
    assert!(
        matches!(refused, Err(ChatError::Forbidden(_))),
        "{refused:?}"
    );
    let scope = Scope::parse(&format!("channel:{}", secret.id.0)).unwrap();
    for round in 0..20 {
        store.add_channel_member(secret.id, bob.id).await.unwrap();
        store.unpin(secret.id, m.id, owner.id).await.unwrap();
        let pin = pinning(&store, (secret.id, m.id), bob.id, &scope);
        let leave = leaving(&store, secret.id, bob.id, &scope);
        let (pinned, left) = race(round, pin, leave).await;
        let pinned = pinned.map(|((_, created), events)| (created, events));
        let kept = before_the_leave(round, "pinned", pinned, left);
        let message = store.message(m.id).await.unwrap().unwrap();
        assert_eq!(message.pinned, kept, "round {round}: pinned as answered");
    }
}

/// Taking one's reaction back, checked against the channel's readers before the
/// reactor's leave (of a private channel) commits, is logged before the `member.left`
/// or refused as an outsider's (as it is after the leave); a refused one leaves the
/// reaction.
async fn a_reactions_removal_racing_the_reactors_leave_comes_before_it_or_not_at_all(
    store: Arc<dyn Store>,
) {
    use chorus_realtime::Scope;
    let (owner, bob, secret) = bob_outside_a_secret(&store).await;
    let m = send(&store, secret.id, owner.id, "react to me").await;
    store.add_channel_member(secret.id, bob.id).await.unwrap();
    assert!(store.add_reaction(m.id, bob.id, "👀").await.unwrap());
    store
        .remove_channel_member(secret.id, bob.id)
        .await
        .unwrap();
    // Not racing: a departed reader's removal is refused.
    let refused = store.remove_reaction(m.id, bob.id, "👀").await;
    assert!(
        matches!(refused, Err(ChatError::Forbidden(_))),
        "{refused:?}"
    );
    let scope = Scope::parse(&format!("channel:{}", secret.id.0)).unwrap();
    for round in 0..20 {
        store.add_channel_member(secret.id, bob.id).await.unwrap();
        let emoji = format!("👍{round}");
        assert!(store.add_reaction(m.id, bob.id, &emoji).await.unwrap());
        let unreact = reacting(&store, (m.id, false), bob.id, &emoji, &scope);
        let leave = leaving(&store, secret.id, bob.id, &scope);
        let (removed, left) = race(round, unreact, leave).await;
        let removed = before_the_leave(round, "took it back", removed, left);
        let message = store.message(m.id).await.unwrap().unwrap();
        let stored = message.reactions.iter().any(|r| r.emoji == emoji);
        assert_eq!(stored, !removed, "round {round}: stored as answered");
    }
}

/// An unpin by a member racing their leave is logged before the leave or refused (as
/// it is after the leave); a refused one leaves the pin.
async fn an_unpin_racing_the_unpinners_leave_comes_before_it_or_not_at_all(store: Arc<dyn Store>) {
    use chorus_realtime::Scope;
    let (owner, bob, secret) = bob_outside_a_secret(&store).await;
    let m = send(&store, secret.id, owner.id, "pin me").await;
    store.pin(secret.id, m.id, owner.id).await.unwrap();
    // Not racing: an outsider's unpin is refused.
    let refused = store.unpin(secret.id, m.id, bob.id).await;
    assert!(
        matches!(refused, Err(ChatError::Forbidden(_))),
        "{refused:?}"
    );
    let scope = Scope::parse(&format!("channel:{}", secret.id.0)).unwrap();
    for round in 0..20 {
        store.add_channel_member(secret.id, bob.id).await.unwrap();
        store.pin(secret.id, m.id, owner.id).await.unwrap();
        let unpin = unpinning(&store, (secret.id, m.id), bob.id, &scope);
        let leave = leaving(&store, secret.id, bob.id, &scope);
        let (unpinned, left) = race(round, unpin, leave).await;
        let unpinned = before_the_leave(round, "unpinned", unpinned, left);
        let message = store.message(m.id).await.unwrap().unwrap();
        assert_eq!(
            message.pinned, !unpinned,
            "round {round}: pinned as answered"
        );
    }
}

/// An add to a channel checked against the workspace's members before a removal from
/// the workspace commits must not leave the removed user in the channel: either the
/// removal takes them out of it too, or the add is refused.
async fn an_add_racing_a_removal_from_the_workspace_leaves_no_member(store: Arc<dyn Store>) {
    let (owner, ws, _) = setup(&store).await;
    let secret = channel(
        &store,
        ws.id,
        "secret",
        ChannelKind::Private,
        owner.id,
        &[owner.id],
    )
    .await;
    let bob = user(&store, "bob").await;
    for round in 0..20 {
        store.add_member(ws.id, bob.id, Role::Member).await.unwrap();
        let add = {
            let store = store.clone();
            async move { store.add_channel_member(secret.id, bob.id).await }
        };
        let remove = {
            let store = store.clone();
            async move { store.remove_member(ws.id, bob.id, Role::Member).await }
        };
        let (added, left) = race(round, add, remove).await;
        let left = left
            .unwrap()
            .unwrap_or_else(|| panic!("round {round}: bob was a member"));
        // Added first: the removal took bob out of the channel too (and says so, for
        // its `channel.left`). Removed first: the add was refused.
        match added {
            Ok(true) => assert!(left.contains(&secret.id), "round {round}: {left:?}"),
            Err(ChatError::BadRequest(_)) => {
                assert!(!left.contains(&secret.id), "round {round}: {left:?}");
            }
            other => panic!("round {round}: {other:?}"),
        }
        assert_eq!(store.member_role(ws.id, bob.id).await.unwrap(), None);
        assert!(
            !store.is_channel_member(secret.id, bob.id).await.unwrap(),
            "round {round}: removed from the workspace, still in its channel"
        );
    }
}

/// A delivery list set at the same time as a member leaves the channel, and observers
/// set at the same time as one is removed from the workspace, never name them after
/// both have committed: either the departure deletes the new entry, or the setting sees
/// the departure and is refused.
async fn lists_and_observers_racing_a_departure_name_no_outsider(store: Arc<dyn Store>) {
    let (_owner, ws, ch) = setup(&store).await;
    let bob = user(&store, "bob").await;
    for round in 0..20 {
        store.add_member(ws.id, bob.id, Role::Member).await.unwrap();
        store.add_channel_member(ch.id, bob.id).await.unwrap();
        let set_list = {
            let store = store.clone();
            async move {
                store
                    .set_delivery_list(ch.id, DeliveryList::Wake, &[bob.id], no_events())
                    .await
            }
        };
        let leave = {
            let store = store.clone();
            async move { store.remove_channel_member(ch.id, bob.id).await }
        };
        let (set, left) = race(round, set_list, leave).await;
        assert!(left.unwrap(), "round {round}: bob was in the channel");
        assert!(
            matches!(&set, Ok(_) | Err(ChatError::BadRequest(_))),
            "round {round}: {set:?}"
        );
        assert_eq!(
            store
                .delivery_list(ch.id, DeliveryList::Wake)
                .await
                .unwrap(),
            Vec::<UserId>::new(),
            "round {round}: left the channel, still on its wake list"
        );

        let set_observers = {
            let store = store.clone();
            async move { store.set_observers(ws.id, &[bob.id], no_events()).await }
        };
        let remove = {
            let store = store.clone();
            async move { store.remove_member(ws.id, bob.id, Role::Member).await }
        };
        let (set, removed) = race(round, set_observers, remove).await;
        assert!(removed.unwrap().is_some(), "round {round}");
        assert!(
            matches!(&set, Ok(_) | Err(ChatError::BadRequest(_))),
            "round {round}: {set:?}"
        );
        assert_eq!(
            store.observers(ws.id).await.unwrap(),
            Vec::<UserId>::new(),
            "round {round}: removed from the workspace, still an observer"
        );
    }
}

async fn removing_a_member_leaves_the_workspace_channels(store: Arc<dyn Store>) {
    let (owner, ws, general) = setup(&store).await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    for u in [&bob, &carol] {
        store.add_member(ws.id, u.id, Role::Member).await.unwrap();
    }
    store.add_channel_member(general.id, bob.id).await.unwrap();
    let secret = channel(
        &store,
        ws.id,
        "secret",
        ChannelKind::Private,
        owner.id,
        &[owner.id, bob.id, carol.id],
    )
    .await;
    let dm = store
        .create_channel(NewChannel {
            workspace_id: ws.id,
            name: "dm".into(),
            topic: String::new(),
            kind: ChannelKind::Dm,
            policy: Policy::Dm,
            created_by: bob.id,
            members: vec![bob.id, carol.id],
            dm_key: Some(format!("{},{}", bob.id, carol.id)),
            settings: Default::default(),
        })
        .await
        .unwrap();
    // A channel bob does not belong to, and bob's membership of another workspace.
    let quiet = channel(&store, ws.id, "quiet", ChannelKind::Public, owner.id, &[]).await;
    let other_ws = store.create_workspace("other", carol.id).await.unwrap();
    store
        .add_member(other_ws.id, bob.id, Role::Member)
        .await
        .unwrap();
    let elsewhere = channel(
        &store,
        other_ws.id,
        "elsewhere",
        ChannelKind::Public,
        carol.id,
        &[carol.id, bob.id],
    )
    .await;
    let said = send(&store, secret.id, bob.id, "still here after I go").await;
    store
        .set_delivery_list(
            secret.id,
            DeliveryList::OnDuty,
            &[bob.id, carol.id],
            no_events(),
        )
        .await
        .unwrap();
    store
        .set_delivery_list(elsewhere.id, DeliveryList::Wake, &[bob.id], no_events())
        .await
        .unwrap();
    store
        .set_observers(ws.id, &[bob.id, carol.id], no_events())
        .await
        .unwrap();
    store
        .set_observers(other_ws.id, &[bob.id], no_events())
        .await
        .unwrap();

    let left = store
        .remove_member(ws.id, bob.id, Role::Member)
        .await
        .unwrap()
        .expect("bob was a member");
    let mut expected = vec![general.id, secret.id, dm.id];
    expected.sort();
    assert_eq!(left, expected, "every channel of the workspace, DMs too");

    assert_eq!(store.member_role(ws.id, bob.id).await.unwrap(), None);
    for ch in [general.id, secret.id, dm.id, quiet.id] {
        assert!(!store.is_channel_member(ch, bob.id).await.unwrap(), "{ch}");
    }
    assert_eq!(
        store.member_channels(bob.id).await.unwrap(),
        vec![elsewhere.id],
        "the other workspace is untouched"
    );
    assert_eq!(
        store.member_role(other_ws.id, bob.id).await.unwrap(),
        Some(Role::Member)
    );
    assert!(store.is_channel_member(dm.id, carol.id).await.unwrap());
    // Lists and observers lose bob in this workspace only.
    assert_eq!(
        store
            .delivery_list(secret.id, DeliveryList::OnDuty)
            .await
            .unwrap(),
        vec![carol.id]
    );
    assert_eq!(
        store
            .delivery_list(elsewhere.id, DeliveryList::Wake)
            .await
            .unwrap(),
        vec![bob.id]
    );
    assert_eq!(store.observers(ws.id).await.unwrap(), vec![carol.id]);
    assert_eq!(store.observers(other_ws.id).await.unwrap(), vec![bob.id]);
    // What bob wrote stays.
    let kept = store.message(said.id).await.unwrap().unwrap();
    assert_eq!(kept.text, "still here after I go");
    assert!(!kept.deleted);

    // Removing again changes nothing; adding back starts with no channels.
    assert_eq!(
        store
            .remove_member(ws.id, bob.id, Role::Member)
            .await
            .unwrap(),
        None
    );
    assert!(store.add_member(ws.id, bob.id, Role::Guest).await.unwrap());
    assert_eq!(
        store
            .remove_member(ws.id, bob.id, Role::Guest)
            .await
            .unwrap(),
        Some(Vec::new())
    );
}

// ---- channels -----------------------------------------------------------------------

async fn channels_and_membership(store: Arc<dyn Store>) {
    let (alice, ws, general) = setup(&store).await;
    let bob = user(&store, "bob").await;
    store.add_member(ws.id, bob.id, Role::Member).await.unwrap();
    assert_eq!(general.name, "general");
    assert_eq!(general.kind, ChannelKind::Public);
    assert_eq!(general.policy, Policy::All);
    assert_eq!(general.workspace_id, ws.id);
    assert_eq!(
        store.channel(general.id).await.unwrap(),
        Some(general.clone())
    );
    assert_eq!(store.channel(ChannelId(9_999)).await.unwrap(), None);

    let dup = store
        .create_channel(NewChannel {
            workspace_id: ws.id,
            name: "general".into(),
            topic: String::new(),
            kind: ChannelKind::Private,
            policy: Policy::All,
            created_by: alice.id,
            members: vec![alice.id],
            dm_key: None,
            settings: Default::default(),
        })
        .await;
    assert!(matches!(dup, Err(ChatError::Conflict(_))), "{dup:?}");
    // The same name in another workspace is fine.
    let other_ws = store.create_workspace("other", alice.id).await.unwrap();
    channel(
        &store,
        other_ws.id,
        "general",
        ChannelKind::Public,
        alice.id,
        &[],
    )
    .await;

    let random = channel(
        &store,
        ws.id,
        "random",
        ChannelKind::Private,
        alice.id,
        &[alice.id],
    )
    .await;
    let patched = store
        .update_channel(
            random.id,
            ChannelPatch {
                topic: Some("anything goes".into()),
                policy: Some(Policy::Mentions),
                ..ChannelPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.name, "random", "unpatched fields stay");
    assert_eq!(patched.topic, "anything goes");
    assert_eq!(patched.policy, Policy::Mentions);
    let renamed = store
        .update_channel(
            random.id,
            ChannelPatch {
                name: Some("lounge".into()),
                ..ChannelPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "lounge");
    assert_eq!(renamed.topic, "anything goes");
    assert_eq!(store.channel(random.id).await.unwrap(), Some(renamed));
    let clash = store
        .update_channel(
            random.id,
            ChannelPatch {
                name: Some("general".into()),
                ..ChannelPatch::default()
            },
        )
        .await;
    assert!(matches!(clash, Err(ChatError::Conflict(_))), "{clash:?}");
    let missing = store
        .update_channel(ChannelId(9_999), ChannelPatch::default())
        .await;
    assert!(
        matches!(missing, Err(ChatError::NotFound(_))),
        "{missing:?}"
    );

    assert!(store.is_channel_member(general.id, alice.id).await.unwrap());
    assert!(!store.is_channel_member(general.id, bob.id).await.unwrap());
    assert!(store.add_channel_member(general.id, bob.id).await.unwrap());
    assert!(!store.add_channel_member(general.id, bob.id).await.unwrap());
    assert!(store.is_channel_member(general.id, bob.id).await.unwrap());
    // The channel and the membership in one query, as a send asks them.
    let (found, member) = store
        .channel_for(general.id, bob.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.id, member), (general.id, true));
    let outsider = user(&store, "outsider").await;
    let (_, member) = store
        .channel_for(general.id, outsider.id)
        .await
        .unwrap()
        .unwrap();
    assert!(!member);
    // A deactivated member may not post: not a member for a send (nor a stream's
    // append), until reactivated.
    store
        .set_deactivated(bob.id, Some(Timestamp(5)))
        .await
        .unwrap();
    let posting = |store: Arc<dyn Store>| async move {
        let (_, member) = store
            .channel_for(general.id, bob.id)
            .await
            .unwrap()
            .unwrap();
        member
    };
    assert!(!posting(store.clone()).await, "deactivated");
    store.set_deactivated(bob.id, None).await.unwrap();
    assert!(posting(store.clone()).await, "reactivated");
    assert!(
        store
            .channel_for(ChannelId(9_999), bob.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.channel_members(general.id).await.unwrap(),
        vec![alice.id, bob.id]
    );
    let mut channels_of_alice = store.member_channels(alice.id).await.unwrap();
    channels_of_alice.sort();
    assert_eq!(channels_of_alice, vec![general.id, random.id]);
    assert_eq!(
        store.member_channels(bob.id).await.unwrap(),
        vec![general.id]
    );
    // What a connection subscribes to, in one query: workspaces, then channels.
    let workspaces_of_alice: Vec<WorkspaceId> = store
        .workspaces_of(alice.id)
        .await
        .unwrap()
        .iter()
        .map(|m| m.workspace.id)
        .collect();
    assert_eq!(
        store.memberships_of(alice.id).await.unwrap(),
        (workspaces_of_alice, channels_of_alice)
    );
    assert_eq!(
        store.memberships_of(UserId(9_999)).await.unwrap(),
        (vec![], vec![])
    );

    store.set_status_text(bob.id, "here").await.unwrap();
    let presence = store.channel_presence(general.id).await.unwrap();
    assert_eq!(
        presence.iter().map(|p| p.user_id).collect::<Vec<_>>(),
        vec![alice.id, bob.id]
    );
    assert_eq!(presence[1].status_text, "here");

    assert!(
        store
            .remove_channel_member(general.id, bob.id)
            .await
            .unwrap()
    );
    assert!(
        !store
            .remove_channel_member(general.id, bob.id)
            .await
            .unwrap()
    );
    assert!(!store.is_channel_member(general.id, bob.id).await.unwrap());
    assert!(store.member_channels(bob.id).await.unwrap().is_empty());
}

async fn visible_channels_and_dm_members(store: Arc<dyn Store>) {
    let (alice, ws, general) = setup(&store).await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    store
        .add_member(ws.id, carol.id, Role::Member)
        .await
        .unwrap();
    let secret = channel(
        &store,
        ws.id,
        "secret",
        ChannelKind::Private,
        alice.id,
        &[alice.id],
    )
    .await;
    let news = channel(&store, ws.id, "news", ChannelKind::Public, alice.id, &[]).await;
    let dm = store
        .create_channel(NewChannel {
            workspace_id: ws.id,
            name: format!("dm-{}-{}", alice.id, carol.id),
            topic: String::new(),
            kind: ChannelKind::Dm,
            policy: Policy::Dm,
            created_by: carol.id,
            members: vec![carol.id, alice.id],
            dm_key: Some(format!("{},{}", alice.id, carol.id)),
            settings: Default::default(),
        })
        .await
        .unwrap();

    let of_alice = store.visible_channels(ws.id, alice.id, true).await.unwrap();
    assert_eq!(
        of_alice
            .iter()
            .map(|v| (v.channel.id, v.member))
            .collect::<Vec<_>>(),
        vec![
            (general.id, true),
            (secret.id, true),
            (news.id, false),
            (dm.id, true)
        ],
        "members' channels and public ones, by id"
    );
    assert_eq!(of_alice[3].member_ids, vec![alice.id, carol.id]);
    assert!(of_alice[0].member_ids.is_empty(), "member ids only for DMs");
    assert_eq!(of_alice[2].unread, 0);
    assert_eq!(of_alice[2].last_read, None);

    let of_bob = store.visible_channels(ws.id, bob.id, true).await.unwrap();
    assert_eq!(
        of_bob.iter().map(|v| v.channel.id).collect::<Vec<_>>(),
        vec![general.id, news.id],
        "no private channels or DMs of others"
    );
    assert!(of_bob.iter().all(|v| !v.member));
    let of_bob_members_only = store.visible_channels(ws.id, bob.id, false).await.unwrap();
    assert!(of_bob_members_only.is_empty());
    let of_carol = store
        .visible_channels(ws.id, carol.id, false)
        .await
        .unwrap();
    assert_eq!(
        of_carol.iter().map(|v| v.channel.id).collect::<Vec<_>>(),
        vec![dm.id]
    );
    let other_ws = store.create_workspace("other", alice.id).await.unwrap();
    assert!(
        store
            .visible_channels(other_ws.id, alice.id, true)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn dm_keys_are_unique_per_workspace(store: Arc<dyn Store>) {
    let (alice, ws, _) = setup(&store).await;
    let bob = user(&store, "bob").await;
    store.add_member(ws.id, bob.id, Role::Member).await.unwrap();
    let key = format!("{},{}", alice.id, bob.id);
    let new_dm = |ws: WorkspaceId| NewChannel {
        workspace_id: ws,
        name: format!("dm-{}-{}", alice.id, bob.id),
        topic: String::new(),
        kind: ChannelKind::Dm,
        policy: Policy::Dm,
        created_by: alice.id,
        members: vec![alice.id, bob.id],
        dm_key: Some(key.clone()),
        settings: Default::default(),
    };
    assert_eq!(store.dm_by_key(ws.id, &key).await.unwrap(), None);
    let dm = store.create_channel(new_dm(ws.id)).await.unwrap();
    assert_eq!(dm.kind, ChannelKind::Dm);
    assert_eq!(dm.policy, Policy::Dm);
    assert_eq!(
        store.dm_by_key(ws.id, &key).await.unwrap(),
        Some(dm.clone())
    );
    assert_eq!(
        store.channel_members(dm.id).await.unwrap(),
        vec![alice.id, bob.id]
    );
    let again = store.create_channel(new_dm(ws.id)).await;
    assert!(matches!(again, Err(ChatError::Conflict(_))), "{again:?}");
    let other_ws = store.create_workspace("other", alice.id).await.unwrap();
    store
        .add_member(other_ws.id, bob.id, Role::Member)
        .await
        .unwrap();
    assert_eq!(store.dm_by_key(other_ws.id, &key).await.unwrap(), None);
    let elsewhere = store.create_channel(new_dm(other_ws.id)).await.unwrap();
    assert_ne!(elsewhere.id, dm.id);
    // A public channel's name never matches a DM key lookup.
    assert_eq!(store.dm_by_key(ws.id, "general").await.unwrap(), None);
}

/// Two service instances over one store (two nodes over one database) open the same
/// DM at once: one channel results and every call returns it.
async fn dm_get_or_create_races_to_one_channel(store: Arc<dyn Store>) {
    let (alice, ws, _) = setup(&store).await;
    let mut others = Vec::new();
    for name in ["bob", "carol", "dave"] {
        let u = user(&store, name).await;
        store.add_member(ws.id, u.id, Role::Member).await.unwrap();
        others.push(u);
    }
    let node = || {
        Arc::new(Chat::new(
            store.clone(),
            Engine::in_memory(EngineConfig::default()),
            ChatConfig::default(),
        ))
    };
    let nodes = [node(), node()];
    for other in &others {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let chat = nodes[i % 2].clone();
                let caller = if i % 3 == 0 {
                    other.clone()
                } else {
                    alice.clone()
                };
                let peer = if i % 3 == 0 { alice.id } else { other.id };
                tokio::spawn(async move {
                    chat.open_dm(
                        &caller,
                        ws.id,
                        OpenDm {
                            user_ids: vec![peer],
                        },
                    )
                    .await
                })
            })
            .collect();
        let mut channel_ids = BTreeSet::new();
        let mut created = 0;
        for task in tasks {
            let (view, new) = task.await.unwrap().unwrap();
            channel_ids.insert(view.channel.id);
            created += usize::from(new);
        }
        assert_eq!(channel_ids.len(), 1, "one DM for the pair");
        assert_eq!(created, 1, "exactly one call created it");
        let dm = *channel_ids.first().unwrap();
        let mut expected = vec![alice.id, other.id];
        expected.sort();
        assert_eq!(store.channel_members(dm).await.unwrap(), expected);
    }
    let dms = store
        .visible_channels(ws.id, alice.id, false)
        .await
        .unwrap()
        .into_iter()
        .filter(|v| v.channel.kind == ChannelKind::Dm)
        .count();
    assert_eq!(dms, 3);
}

/// Nodes starting at once on an empty shared database all come up with the same
/// admin; exactly one of them created it (and holds its first token).
async fn nodes_starting_together_create_one_admin(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let chat = Chat::new(
                store.clone(),
                Engine::in_memory(EngineConfig::default()),
                ChatConfig::default(),
            );
            tokio::spawn(async move { chat.bootstrap_admin().await })
        })
        .collect();
    let mut admins = BTreeSet::new();
    let mut tokens = 0;
    for task in tasks {
        let (admin, token) = task.await.unwrap().unwrap();
        assert!(admin.is_admin);
        assert_eq!(admin.name, "admin");
        admins.insert(admin.id);
        tokens += usize::from(token.is_some());
    }
    assert_eq!(admins.len(), 1);
    assert_eq!(tokens, 1);
    assert_eq!(store.count_users().await.unwrap(), 1);
}

// ---- messages -----------------------------------------------------------------------

async fn messages_send_and_page(store: Arc<dyn Store>) {
    let (alice, _, ch) = setup(&store).await;
    let mut sent = Vec::new();
    for i in 0..10 {
        sent.push(send(&store, ch.id, alice.id, &format!("m{i}")).await);
    }
    let first = &sent[0];
    assert_eq!(first.text, "m0");
    assert_eq!(first.channel_id, ch.id);
    assert_eq!(first.author_id, alice.id);
    assert!(!first.deleted);
    assert_eq!(first.edited_at, None);
    assert_eq!(first.thread_id, None);
    assert_eq!(first.reply_count, 0);
    assert!(first.reactions.is_empty());
    assert!(!first.pinned);
    assert!(first.created_at.0 > 0);
    let all = ids(&sent);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "ids grow: {all:?}");
    assert_eq!(store.message(first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(store.message(MessageId(9_999)).await.unwrap(), None);

    // Latest page first, returned oldest first.
    let page = store.list_messages(ch.id, query(3)).await.unwrap();
    assert_eq!(ids(&page), all[7..].to_vec());
    assert_eq!(page, sent[7..].to_vec());
    let before = store
        .list_messages(
            ch.id,
            MessageQuery {
                before: Some(sent[7].id),
                ..query(3)
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&before), all[4..7].to_vec());
    // `after` pages forward from the cursor.
    let after = store
        .list_messages(
            ch.id,
            MessageQuery {
                after: Some(sent[2].id),
                ..query(3)
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&after), all[3..6].to_vec());
    let between = store
        .list_messages(
            ch.id,
            MessageQuery {
                after: Some(sent[2].id),
                before: Some(sent[8].id),
                ..query(2)
            },
        )
        .await
        .unwrap();
    assert_eq!(
        ids(&between),
        all[6..8].to_vec(),
        "both bounds: the newest in range"
    );
    let everything = store.list_messages(ch.id, query(100)).await.unwrap();
    assert_eq!(ids(&everything), all);
    let none = store
        .list_messages(
            ch.id,
            MessageQuery {
                after: Some(sent[9].id),
                ..query(10)
            },
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    assert!(
        store
            .list_messages(ChannelId(9_999), query(10))
            .await
            .unwrap()
            .is_empty()
    );
    // Another channel's messages stay out.
    let other = channel(
        &store,
        ch.workspace_id,
        "other",
        ChannelKind::Public,
        alice.id,
        &[alice.id],
    )
    .await;
    send(&store, other.id, alice.id, "elsewhere").await;
    assert_eq!(
        ids(&store.list_messages(ch.id, query(100)).await.unwrap()),
        all
    );
}

async fn idempotent_send(store: Arc<dyn Store>) {
    let (alice, ws, ch) = setup(&store).await;
    let bob = user(&store, "bob").await;
    store.add_member(ws.id, bob.id, Role::Member).await.unwrap();
    store.add_channel_member(ch.id, bob.id).await.unwrap();
    let keyed = |author: UserId, text: &str, key: &str| NewMessage {
        idempotency_key: Some(key.into()),
        streaming: false,
        turns: Default::default(),
        kind: Default::default(),
        mentions: vec![bob.id],
        ..new_message(ch.id, author, text)
    };
    let first = store
        .insert_message(keyed(alice.id, "hello", "k1"))
        .await
        .unwrap();
    assert!(first.created);
    let retry = store
        .insert_message(keyed(alice.id, "hello again", "k1"))
        .await
        .unwrap();
    assert!(!retry.created);
    assert_eq!(retry.message, first.message, "the first result, unchanged");
    assert!(retry.root.is_none());
    // Keys are per author.
    let bobs = store
        .insert_message(keyed(bob.id, "mine", "k1"))
        .await
        .unwrap();
    assert!(bobs.created);
    assert_ne!(bobs.message.id, first.message.id);
    let other_key = store
        .insert_message(keyed(alice.id, "hello", "k2"))
        .await
        .unwrap();
    assert!(other_key.created);
    assert_eq!(
        store.list_messages(ch.id, query(100)).await.unwrap().len(),
        3
    );
    // The retry created no second mention either.
    let state = store.read_state(ch.id, bob.id).await.unwrap().unwrap();
    assert_eq!(state.unread, 2);
    assert_eq!(state.unread_mentions, 2);
}

async fn idempotent_send_under_concurrency(store: Arc<dyn Store>) {
    let (alice, _, ch) = setup(&store).await;
    for round in 0..5 {
        let key = format!("key-{round}");
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                let new = NewMessage {
                    idempotency_key: Some(key.clone()),
                    ..new_message(ch.id, alice.id, &format!("attempt {i}"))
                };
                tokio::spawn(async move { store.insert_message(new).await })
            })
            .collect();
        let mut created = 0;
        let mut message_ids = BTreeSet::new();
        for task in tasks {
            let inserted = task.await.unwrap().unwrap();
            created += usize::from(inserted.created);
            message_ids.insert(inserted.message.id);
        }
        assert_eq!(created, 1, "round {round}: one send created the message");
        assert_eq!(
            message_ids.len(),
            1,
            "round {round}: all got the same message"
        );
    }
    assert_eq!(
        store.list_messages(ch.id, query(100)).await.unwrap().len(),
        5
    );
}

/// Many plain sends at once (batched into shared statements on SQLite), with and
/// without keys, some keys repeated: each send gets back the message it wrote, with the
/// id under which that text is stored; times rise with ids.
async fn concurrent_sends_each_get_their_own_message(store: Arc<dyn Store>) {
    let (alice, ws, ch) = setup(&store).await;
    let bob = user(&store, "bob").await;
    store.add_member(ws.id, bob.id, Role::Member).await.unwrap();
    store.add_channel_member(ch.id, bob.id).await.unwrap();
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let store = store.clone();
            let author = if i % 2 == 0 { alice.id } else { bob.id };
            // Every third send has a key; i and i + 6 share one (and an author).
            let key = (i % 3 == 0).then(|| format!("k{}", i / 12));
            let new = NewMessage {
                idempotency_key: key.clone(),
                ..new_message(ch.id, author, &format!("send {i}"))
            };
            tokio::spawn(async move { (author, key, store.insert_message(new).await.unwrap()) })
        })
        .collect();
    let mut created = Vec::new();
    let mut keyed: std::collections::HashMap<(UserId, String), BTreeSet<MessageId>> =
        Default::default();
    for task in tasks {
        let (author, key, inserted) = task.await.unwrap();
        assert_eq!(inserted.message.author_id, author);
        if let Some(key) = key {
            keyed
                .entry((author, key))
                .or_default()
                .insert(inserted.message.id);
        }
        if inserted.created {
            created.push(inserted.message);
        }
    }
    assert!(
        keyed.values().all(|ids| ids.len() == 1),
        "one message per key"
    );
    let stored = store.list_messages(ch.id, query(500)).await.unwrap();
    assert_eq!(stored.len(), created.len());
    created.sort_by_key(|m| m.id);
    for (mine, theirs) in created.iter().zip(&stored) {
        assert_eq!(mine.id, theirs.id);
        assert_eq!(
            mine.text, theirs.text,
            "the id names the text that was sent"
        );
        assert_eq!(mine.created_at, theirs.created_at);
    }
    assert!(
        stored
            .windows(2)
            .all(|w| w[0].created_at <= w[1].created_at)
    );
}

/// Plain sends (SQLite: batched, their ids given by the batcher) interleaved with
/// replies (a transaction of their own): every message gets its own id, its text at that
/// id, and its logged event names it, at consecutive offsets of the channel's scope.
async fn batched_and_other_inserts_interleave_with_their_events(store: Arc<dyn Store>) {
    use chorus_realtime::{Publish, Scope};
    let (alice, _, ch) = setup(&store).await;
    // Deliveries go to the user's webhook as it is when claimed.
    store
        .set_webhook(alice.id, Some("http://hooks.example/"), None)
        .await
        .unwrap();
    let root = send(&store, ch.id, alice.id, "root").await;
    let scope = Scope::parse(&format!("channel:{}", ch.id.0)).unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            let scope = scope.clone();
            let new = NewMessage {
                thread_id: (i % 5 == 0).then_some(root.id),
                ..new_message(ch.id, alice.id, &format!("send {i}"))
            };
            tokio::spawn(async move {
                // Every other message is also delivered by webhook, queued with it.
                let author = new.author_id;
                let events = Box::new(move |i: &chorus_chat::store::Inserted| Outbox {
                    events: vec![Publish::new(
                        scope.clone(),
                        "message.created",
                        &serde_json::json!({ "id": i.message.id.0, "text": i.message.text }),
                    )],
                    webhooks: (i.message.id.0 % 2 == 0)
                        .then(|| NewWebhookDelivery {
                            user_id: author,
                            event_id: format!("m{}", i.message.id.0),
                            url: "http://hooks.example/".into(),
                            body: i.message.text.clone(),
                            due_at: Timestamp(0),
                        })
                        .into_iter()
                        .collect(),
                    then: None,
                });
                store.insert_message_logged(new, events).await.unwrap()
            })
        })
        .collect();
    let mut sent = Vec::new();
    for task in tasks {
        let (inserted, logged) = task.await.unwrap();
        assert_eq!(logged.len(), 1, "the message's event is logged with it");
        let data: serde_json::Value = serde_json::from_str(logged[0].data.as_str()).unwrap();
        assert_eq!(data["id"], inserted.message.id.0);
        sent.push((inserted.message, logged[0].offset.unwrap()));
    }
    let ids: BTreeSet<MessageId> = sent.iter().map(|(m, _)| m.id).collect();
    assert_eq!(ids.len(), sent.len(), "no id given twice");
    for (message, _) in &sent {
        let stored = store.message(message.id).await.unwrap().unwrap();
        assert_eq!(
            stored.text, message.text,
            "the id names the text that was sent"
        );
    }
    let (logged, head) = store.scope_events(&scope, 0, 500).await.unwrap();
    assert_eq!(logged.len(), sent.len());
    let offsets: Vec<u64> = logged.iter().map(|e| e.offset.unwrap()).collect();
    assert!(
        offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "a scope's offsets are consecutive"
    );
    assert_eq!(offsets.last(), Some(&head));
    let queued = store
        .claim_due_webhooks(Timestamp(1), Timestamp(2), &ClaimLimits::total(1_000))
        .await
        .unwrap();
    let mut expected: Vec<(String, String)> = sent
        .iter()
        .filter(|(m, _)| m.id.0 % 2 == 0)
        .map(|(m, _)| (format!("m{}", m.id.0), m.text.clone()))
        .collect();
    let mut got: Vec<(String, String)> = queued.into_iter().map(|d| (d.event_id, d.body)).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "each message's webhook queued with it, once");
    for event in &logged {
        let data: serde_json::Value = serde_json::from_str(event.data.as_str()).unwrap();
        let (message, offset) = sent
            .iter()
            .find(|(m, _)| data["id"] == m.id.0)
            .expect("every logged event names a message sent");
        assert_eq!(event.offset, Some(*offset));
        assert_eq!(data["text"], message.text.as_str());
    }
}

/// One change may log more events than either database binds values in one statement
/// (a channel created with 10,000 members logs 10,000 joins): all are logged, at
/// consecutive offsets.
async fn a_change_logs_more_events_than_one_statement_binds(store: Arc<dyn Store>) {
    use chorus_realtime::{Publish, Scope};
    const N: usize = 12_000;
    let alice = user(&store, "alice").await;
    let ws = store.create_workspace("acme", alice.id).await.unwrap();
    let ch = channel(
        &store,
        ws.id,
        "big",
        ChannelKind::Public,
        alice.id,
        &[alice.id],
    )
    .await;
    let at = Scope::parse(&format!("channel:{}", ch.id.0)).unwrap();
    let (_, before) = store.scope_events(&at, 0, 1).await.unwrap();
    let logged = store
        .set_delivery_list(
            ch.id,
            DeliveryList::Wake,
            &[alice.id],
            events_only(move |()| {
                (0..N)
                    .map(|i| Publish::new(at.clone(), "member.joined", &i))
                    .collect()
            }),
        )
        .await
        .unwrap();
    assert_eq!(logged.len(), N);
    let offsets: Vec<u64> = logged.iter().map(|e| e.offset.unwrap()).collect();
    let expected: Vec<u64> = (before + 1..=before + N as u64).collect();
    assert_eq!(offsets, expected, "consecutive offsets after the head");
    let at = Scope::parse(&format!("channel:{}", ch.id.0)).unwrap();
    let (tail, head) = store
        .scope_events(&at, before + N as u64 - 3, 10)
        .await
        .unwrap();
    assert_eq!(head, before + N as u64);
    assert_eq!(tail.len(), 3, "the last rows are in the log");
    // Read back in several pages: all of them, or as many as asked, in order.
    let (all, head) = store.scope_events(&at, before, N).await.unwrap();
    let offsets: Vec<u64> = all.iter().map(|e| e.offset.unwrap()).collect();
    assert_eq!(offsets, expected, "every event, in offset order");
    assert_eq!(head, before + N as u64);
    let (some, _) = store.scope_events(&at, before + 10, 2_500).await.unwrap();
    let offsets: Vec<u64> = some.iter().map(|e| e.offset.unwrap()).collect();
    assert_eq!(
        offsets,
        expected[10..2_510],
        "the first 2,500 after the position"
    );
    let (none, head) = store.scope_events(&at, before, 0).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(head, before + N as u64);
}

/// A logged event reads back as it was appended: kind, data text (escapes, quotes,
/// non-ASCII, control characters), marks, effect, offset and log time; a position at
/// the head reads nothing and still gives the head.
async fn logged_events_read_back_exactly(store: Arc<dyn Store>) {
    use chorus_realtime::event::{Effect, Mark, Marks};
    use chorus_realtime::{Publish, Scope};
    let at = Scope::parse("topic:exact").unwrap();
    let marks = Marks {
        default: Mark::Observe,
        users: [(7, Mark::Wake), (8, Mark::Skip)].into_iter().collect(),
    };
    let effect = Effect {
        subscribe: vec![Scope::parse("channel:9").unwrap()],
        after: Some(41),
        drop_user: Some(3),
        ..Effect::default()
    };
    let texts = [
        "plain",
        "quotes \" and \\ backslashes, a tab\t and\nlines",
        "non-ASCII: é ü 漢字 🎉, an escape's text: \\u00e9",
        "control: \u{1} \u{1f}",
    ];
    let mut appended = vec![
        Publish::new(at.clone(), "with.marks", &serde_json::json!({"n": 1.5e300}))
            .with_marks(marks.clone())
            .with_effect(effect.clone()),
    ];
    appended.extend(texts.iter().map(|t| {
        Publish::new(
            at.clone(),
            "message.created",
            &serde_json::json!({ "text": t }),
        )
    }));
    // Stored as given: a raw text the serializer would not have written.
    let mut raw = Publish::new(at.clone(), "raw", &0);
    raw.data = r#"{ "spaced" : [1, 2.50, "\u00e9"] }"#.to_owned();
    appended.push(raw);
    let logged = store.append_events(appended).await.unwrap();
    let (read, head) = store.scope_events(&at, 0, 100).await.unwrap();
    assert_eq!(read.len(), logged.len());
    assert_eq!(Some(head), logged.last().unwrap().offset);
    for (read, logged) in read.iter().zip(&logged) {
        assert_eq!(read.scope, at);
        assert_eq!(read.kind, logged.kind);
        assert_eq!(read.data, logged.data, "the data text as stored");
        assert_eq!(read.offset, logged.offset);
        assert_eq!(read.logged_at, logged.logged_at);
        assert_eq!(read.marks.as_deref(), logged.marks.as_deref());
        assert_eq!(read.effect.as_deref(), logged.effect.as_deref());
        assert!(!read.ephemeral);
    }
    assert_eq!(read[0].marks.as_deref(), Some(&marks));
    assert_eq!(read[0].effect.as_deref(), Some(&effect));
    let (after_head, again) = store.scope_events(&at, head, 100).await.unwrap();
    assert!(after_head.is_empty());
    assert_eq!(again, head);
    // A scope nothing was logged in: no events, the log's base as its head.
    let (empty, base) = store
        .scope_events(&Scope::parse("topic:never").unwrap(), 0, 100)
        .await
        .unwrap();
    assert!(empty.is_empty());
    assert_eq!(
        base,
        store
            .scope_head(&Scope::parse("topic:never").unwrap())
            .await
            .unwrap()
    );
}

/// What fills a starting node's windows: the log's latest events by log time, across
/// scopes and at most each scope's last so many, as appended, ordered by scope and
/// offset.
async fn the_latest_events_are_read_across_scopes(store: Arc<dyn Store>) {
    use chorus_realtime::{Publish, Scope};
    let (a, b) = (
        Scope::parse("topic:a").unwrap(),
        Scope::parse("topic:b").unwrap(),
    );
    // Three appends, each in a later millisecond than the one before (the log's time).
    let mut logged = Vec::new();
    for (scope, n) in [(&a, 3), (&b, 2), (&a, 2)] {
        let at = std::time::SystemTime::now();
        while std::time::SystemTime::now()
            .duration_since(at)
            .unwrap()
            .as_millis()
            < 2
        {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let events = (0..n)
            .map(|i| Publish::new(scope.clone(), "m", &i))
            .collect();
        logged.push(store.append_events(events).await.unwrap());
    }
    let key = |p: &Publish| {
        (
            p.scope.to_string(),
            p.offset,
            p.kind.clone(),
            p.data.clone(),
            p.logged_at,
        )
    };
    let keys = |ps: &[Publish]| ps.iter().map(key).collect::<Vec<_>>();
    // The latest four: the last append's two, then the one before it.
    let mut want = keys(&logged[2]);
    want.extend(keys(&logged[1]));
    want.sort();
    assert_eq!(keys(&store.latest_events(4, 100).await.unwrap()), want);
    let mut all: Vec<_> = logged.iter().flat_map(|l| keys(l)).collect();
    all.sort();
    assert_eq!(keys(&store.latest_events(100, 100).await.unwrap()), all);
    // At most each scope's last `per_scope`: a's last one, b's last one.
    let mut lasts = keys(&logged[2][1..]);
    lasts.extend(keys(&logged[1][1..]));
    lasts.sort();
    assert_eq!(keys(&store.latest_events(100, 1).await.unwrap()), lasts);
    assert!(store.latest_events(0, 100).await.unwrap().is_empty());
    assert!(store.latest_events(100, 0).await.unwrap().is_empty());
}

/// Creating a workspace or a channel, changing a channel and replacing a delivery list
/// or the observers log their events in the change's transaction: a change that fails
/// logs nothing, one that commits has its events in the log at consecutive offsets, and
/// a new channel's `then` events see its first members' joins as logged.
async fn creations_settings_and_lists_log_their_events(store: Arc<dyn Store>) {
    use chorus_realtime::{Publish, Scope};
    let scope = |s: String| Scope::parse(&s).unwrap();
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let (ws, logged) = store
        .create_workspace_logged(
            "acme",
            (alice.id, None),
            events_only(|ws: &Workspace| {
                let at = Scope::parse(&format!("workspace:{}", ws.id.0)).unwrap();
                vec![Publish::new(at, "workspace.created", &ws.id.0)]
            }),
        )
        .await
        .unwrap();
    let ws_scope = scope(format!("workspace:{}", ws.id.0));
    let (in_log, head) = store.scope_events(&ws_scope, 0, 10).await.unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!(in_log.len(), 1, "the workspace's event is logged with it");
    assert_eq!(in_log[0].offset, logged[0].offset);
    assert_eq!(Some(head), logged[0].offset);
    store.add_member(ws.id, bob.id, Role::Member).await.unwrap();

    // A channel: its creation on the workspace, a join per member on the channel, then
    // one event per join built from the joins as logged (their offsets).
    let new_channel = |name: &str| NewChannel {
        workspace_id: ws.id,
        name: name.into(),
        topic: String::new(),
        kind: ChannelKind::Public,
        policy: Policy::All,
        created_by: alice.id,
        members: vec![alice.id, bob.id],
        dm_key: None,
        settings: Default::default(),
    };
    let events = |ws_scope: Scope| -> chorus_chat::store::Events<CreatedChannel> {
        Box::new(move |created: &CreatedChannel| {
            let ch = &created.channel;
            let at = Scope::parse(&format!("channel:{}", ch.id.0)).unwrap();
            let told = ws_scope.clone();
            Outbox {
                events: vec![
                    Publish::new(ws_scope.clone(), "channel.created", &ch.id.0),
                    Publish::new(at.clone(), "member.joined", &1),
                    Publish::new(at, "member.joined", &2),
                ],
                webhooks: Vec::new(),
                then: Some(Box::new(move |logged: &[Publish]| {
                    logged
                        .iter()
                        .skip(1)
                        .map(|joined| Publish::new(told.clone(), "joined.after", &joined.offset))
                        .collect()
                })),
            }
        })
    };
    let (ch, logged) = store
        .create_channel_logged(new_channel("plans"), events(ws_scope.clone()))
        .await
        .unwrap();
    let ch_scope = scope(format!("channel:{}", ch.id.0));
    let kinds: Vec<&str> = logged.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "channel.created",
            "member.joined",
            "member.joined",
            "joined.after",
            "joined.after"
        ]
    );
    let (joins, _) = store.scope_events(&ch_scope, 0, 10).await.unwrap();
    let join_offsets: Vec<u64> = joins.iter().map(|e| e.offset.unwrap()).collect();
    assert_eq!(join_offsets[1], join_offsets[0] + 1, "consecutive offsets");
    let (on_ws, ws_head) = store.scope_events(&ws_scope, 0, 10).await.unwrap();
    let told: Vec<String> = on_ws
        .iter()
        .filter(|e| e.kind == "joined.after")
        .map(|e| e.data.as_str().to_owned())
        .collect();
    let expected: Vec<String> = join_offsets.iter().map(|o| o.to_string()).collect();
    assert_eq!(told, expected, "each `then` event saw its join's offset");

    // A creation that fails (the name is taken) logs nothing.
    let dup = store
        .create_channel_logged(new_channel("plans"), events(ws_scope.clone()))
        .await;
    assert!(
        matches!(dup, Err(ChatError::Conflict(_))),
        "{:?}",
        dup.err()
    );
    assert_eq!(store.scope_head(&ws_scope).await.unwrap(), ws_head);

    // A change to the channel, with its event; a change to no channel logs nothing.
    let renamed = |name: &str| ChannelPatch {
        name: Some(name.into()),
        topic: None,
        policy: None,
        settings: None,
    };
    let updated = |ch: &Channel| {
        let at = Scope::parse(&format!("channel:{}", ch.id.0)).unwrap();
        vec![Publish::new(at, "channel.updated", &ch.name)]
    };
    let (changed, logged) = store
        .update_channel_logged(ch.id, renamed("roadmap"), events_only(updated))
        .await
        .unwrap();
    assert_eq!(changed.name, "roadmap");
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].data.as_str(), "\"roadmap\"");
    let head = store.scope_head(&ch_scope).await.unwrap();
    assert_eq!(logged[0].offset, Some(head));
    let missing = store
        .update_channel_logged(ChannelId(9_999), renamed("x"), events_only(updated))
        .await;
    assert!(matches!(missing, Err(ChatError::NotFound(_))));
    let other = scope("channel:9999".into());
    assert_eq!(
        store.scope_events(&other, 0, 10).await.unwrap().0.len(),
        0,
        "a change that failed logs nothing"
    );

    // Delivery lists and observers.
    let list_event = Publish::new(ch_scope.clone(), "channel.wake_list_updated", &[bob.id.0]);
    let logged = store
        .set_delivery_list(
            ch.id,
            DeliveryList::Wake,
            &[bob.id],
            events_only(move |()| vec![list_event.clone()]),
        )
        .await
        .unwrap();
    assert_eq!(logged[0].offset, Some(head + 1));
    let observers_event = Publish::new(ws_scope.clone(), "workspace.observers_updated", &1);
    let logged = store
        .set_observers(
            ws.id,
            &[bob.id],
            events_only(move |()| vec![observers_event.clone()]),
        )
        .await
        .unwrap();
    assert_eq!(logged[0].offset, Some(ws_head + 1));
    assert_eq!(store.scope_head(&ws_scope).await.unwrap(), ws_head + 1);
}

/// A message's audience (the mentioned, woken agents) is kept, in its transaction, to
/// those who may read the channel then: members, and for a public channel the
/// workspace's members who are not guests; a removal, a removal from the workspace or a
/// demotion to guest committed before it counts. Only those readers get a turn.
async fn a_message_tells_only_those_who_may_read_its_channel(store: Arc<dyn Store>) {
    let (owner, ws, open) = setup(&store).await;
    let [bob, carol, gus, dan] = [
        user(&store, "bob").await,
        user(&store, "carol").await,
        user(&store, "gus").await,
        user(&store, "dan").await,
    ];
    for (who, role) in [
        (&bob, Role::Member),
        (&carol, Role::Member),
        (&gus, Role::Guest),
    ] {
        store.add_member(ws.id, who.id, role).await.unwrap();
    }
    let secret = channel(
        &store,
        ws.id,
        "secret",
        ChannelKind::Private,
        owner.id,
        &[owner.id, bob.id],
    )
    .await;
    let everyone = vec![bob.id, carol.id, gus.id, dan.id];
    let readers = |ch: ChannelId, audience: Vec<UserId>, agents: Vec<UserId>| {
        let store = store.clone();
        async move {
            let inserted = store
                .insert_message(NewMessage {
                    audience,
                    turns: NewTurns {
                        agents,
                        due_at: None,
                    },
                    ..new_message(ch, owner.id, "hi")
                })
                .await
                .unwrap();
            let turns = store.turns(inserted.message.id).await.unwrap();
            let turns: Vec<UserId> = turns.into_iter().map(|t| t.agent_id).collect();
            (inserted.readers, turns)
        }
    };

    let (told, turns) = readers(secret.id, everyone.clone(), vec![carol.id, bob.id]).await;
    assert_eq!((told, turns), (vec![bob.id], vec![bob.id]));
    let (told, _) = readers(open.id, everyone.clone(), Vec::new()).await;
    assert_eq!(
        told,
        vec![bob.id, carol.id],
        "not the guest, nor a stranger"
    );
    // Woken agents are checked with the audience even when it leaves them out.
    let (told, turns) = readers(secret.id, Vec::new(), vec![bob.id, dan.id]).await;
    assert_eq!((told, turns), (vec![bob.id], vec![bob.id]));

    let message = send(&store, open.id, owner.id, "plain").await;
    let (edited, _) = store
        .edit_message_logged(
            message.id,
            "@carol @gus",
            &[carol.id, gus.id],
            &[carol.id, gus.id],
            no_events(),
        )
        .await
        .unwrap();
    assert_eq!(edited.readers, vec![carol.id]);

    store
        .remove_channel_member(secret.id, bob.id)
        .await
        .unwrap();
    store
        .set_member_role(ws.id, carol.id, Role::Member, Role::Guest)
        .await
        .unwrap();
    let (told, turns) = readers(secret.id, everyone.clone(), vec![bob.id]).await;
    assert_eq!((told, turns), (Vec::new(), Vec::new()));
    let (told, _) = readers(open.id, everyone.clone(), Vec::new()).await;
    assert_eq!(told, vec![bob.id]);
    store
        .remove_member(ws.id, bob.id, Role::Member)
        .await
        .unwrap();
    let (told, _) = readers(open.id, everyone, Vec::new()).await;
    assert!(told.is_empty(), "{told:?}");
}

async fn edit_and_delete(store: Arc<dyn Store>) {
    let (alice, ws, ch) = setup(&store).await;
    let bob = user(&store, "bob").await;
    store.add_member(ws.id, bob.id, Role::Member).await.unwrap();
    store.add_channel_member(ch.id, bob.id).await.unwrap();
    let message = send(&store, ch.id, alice.id, "hi").await;

    let edited = store
        .edit_message(message.id, "hi @bob", &[bob.id])
        .await
        .unwrap();
    assert_eq!(edited.text, "hi @bob");
    assert_eq!(edited.mentions, vec![bob.id]);
    assert!(edited.edited_at.is_some());
    assert_eq!(edited.created_at, message.created_at);
    assert_eq!(
        store.message(message.id).await.unwrap(),
        Some(edited.clone())
    );
    let state = store.read_state(ch.id, bob.id).await.unwrap().unwrap();
    assert_eq!((state.unread, state.unread_mentions), (1, 1));
    let unmentioned = store.edit_message(message.id, "hi", &[]).await.unwrap();
    assert!(unmentioned.mentions.is_empty());
    let state = store.read_state(ch.id, bob.id).await.unwrap().unwrap();
    assert_eq!(
        (state.unread, state.unread_mentions),
        (1, 0),
        "edit re-indexes mentions"
    );
    assert!(matches!(
        store.edit_message(MessageId(9_999), "x", &[]).await,
        Err(ChatError::NotFound(_))
    ));

    store
        .edit_message(message.id, "@bob", &[bob.id])
        .await
        .unwrap();
    store.add_reaction(message.id, bob.id, "👍").await.unwrap();
    store.pin(ch.id, message.id, bob.id).await.unwrap();
    let deletion = store.delete_message(message.id).await.unwrap();
    assert!(deletion.unpinned);
    assert!(deletion.root.is_none());
    let tomb = &deletion.message;
    assert!(tomb.deleted);
    assert_eq!(tomb.text, "");
    assert!(tomb.mentions.is_empty());
    assert!(tomb.reactions.is_empty());
    assert!(!tomb.pinned);
    assert_eq!(store.count_pins(ch.id).await.unwrap(), 0);
    assert_eq!(
        store.message(message.id).await.unwrap().as_ref(),
        Some(tomb)
    );
    // Tombstones stay in history (clients render "deleted").
    assert_eq!(
        ids(&store.list_messages(ch.id, query(10)).await.unwrap()),
        vec![message.id.0]
    );
    let state = store.read_state(ch.id, bob.id).await.unwrap().unwrap();
    assert_eq!((state.unread, state.unread_mentions), (0, 0));

    assert!(matches!(
        store.delete_message(message.id).await,
        Err(ChatError::NotFound(_))
    ));
    assert!(matches!(
        store.edit_message(message.id, "back", &[]).await,
        Err(ChatError::NotFound(_))
    ));
    assert!(matches!(
        store.delete_message(MessageId(9_999)).await,
        Err(ChatError::NotFound(_))
    ));
}

async fn threads_and_reply_counts(store: Arc<dyn Store>) {
    let (alice, _, ch) = setup(&store).await;
    let root = send(&store, ch.id, alice.id, "root").await;
    let other_root = send(&store, ch.id, alice.id, "other").await;

    let first = store
        .insert_message(NewMessage {
            thread_id: Some(root.id),
            ..new_message(ch.id, alice.id, "r1")
        })
        .await
        .unwrap();
    let updated_root = first.root.expect("a reply returns its root");
    assert_eq!(updated_root.id, root.id);
    assert_eq!(updated_root.reply_count, 1);
    assert_eq!(updated_root.last_reply_at, Some(first.message.created_at));
    assert_eq!(first.message.thread_id, Some(root.id));
    let r2 = reply(&store, &root, alice.id, "r2").await;
    let r3 = reply(&store, &root, alice.id, "r3").await;
    reply(&store, &other_root, alice.id, "elsewhere").await;

    let root_now = store.message(root.id).await.unwrap().unwrap();
    assert_eq!(root_now.reply_count, 3);
    assert_eq!(root_now.last_reply_at, Some(r3.created_at));
    // Top level: roots only; a thread: its replies only.
    assert_eq!(
        ids(&store.list_messages(ch.id, query(10)).await.unwrap()),
        vec![root.id.0, other_root.id.0]
    );
    let thread = store
        .list_messages(
            ch.id,
            MessageQuery {
                thread_id: Some(root.id),
                ..query(10)
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&thread), vec![first.message.id.0, r2.id.0, r3.id.0]);
    let thread_page = store
        .list_messages(
            ch.id,
            MessageQuery {
                thread_id: Some(root.id),
                after: Some(first.message.id),
                ..query(1)
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&thread_page), vec![r2.id.0]);

    let deletion = store.delete_message(r3.id).await.unwrap();
    let root_after = deletion.root.expect("deleting a reply returns its root");
    assert_eq!(root_after.reply_count, 2);
    assert_eq!(root_after.last_reply_at, Some(r2.created_at));
    store.delete_message(r2.id).await.unwrap();
    let deletion = store.delete_message(first.message.id).await.unwrap();
    let root_after = deletion.root.unwrap();
    assert_eq!(root_after.reply_count, 0);
    assert_eq!(root_after.last_reply_at, None);
    assert_eq!(
        store
            .message(other_root.id)
            .await
            .unwrap()
            .unwrap()
            .reply_count,
        1
    );
}

/// Replies and reply deletions racing on one root (as on two nodes): the root's count
/// ends exact.
async fn concurrent_replies_count_exactly(store: Arc<dyn Store>) {
    let (alice, _, ch) = setup(&store).await;
    let root = send(&store, ch.id, alice.id, "root").await;
    let doomed: Vec<Message> = {
        let mut v = Vec::new();
        for i in 0..5 {
            v.push(reply(&store, &root, alice.id, &format!("doomed {i}")).await);
        }
        v
    };
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        let root_id = root.id;
        tasks.push(tokio::spawn(async move {
            store
                .insert_message(NewMessage {
                    thread_id: Some(root_id),
                    ..new_message(ch.id, alice.id, &format!("r{i}"))
                })
                .await
                .map(|_| ())
        }));
    }
    for m in doomed {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.delete_message(m.id).await.map(|_| ())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let root_now = store.message(root.id).await.unwrap().unwrap();
    assert_eq!(root_now.reply_count, 20);
    let replies = store
        .list_messages(
            ch.id,
            MessageQuery {
                thread_id: Some(root.id),
                ..query(100)
            },
        )
        .await
        .unwrap();
    let latest = replies
        .iter()
        .filter(|m| !m.deleted)
        .map(|m| m.created_at)
        .max();
    assert_eq!(root_now.last_reply_at, latest);
}

// ---- reactions and pins -------------------------------------------------------------

async fn reactions(store: Arc<dyn Store>) {
    let (alice, ws, ch) = setup(&store).await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    // Readers of the public channel: whoever reacts must be.
    for reader in [bob.id, carol.id] {
        store.add_member(ws.id, reader, Role::Member).await.unwrap();
    }
    let m = send(&store, ch.id, alice.id, "react to me").await;
    let other = send(&store, ch.id, alice.id, "not me").await;

    assert!(store.add_reaction(m.id, bob.id, "🎉").await.unwrap());
    assert!(store.add_reaction(m.id, alice.id, "👍").await.unwrap());
    assert!(store.add_reaction(m.id, carol.id, "🎉").await.unwrap());
    assert!(store.add_reaction(m.id, alice.id, "🎉").await.unwrap());
    assert!(
        !store.add_reaction(m.id, bob.id, "🎉").await.unwrap(),
        "once per user and emoji"
    );
    assert!(store.add_reaction(other.id, bob.id, "👀").await.unwrap());

    let loaded = store.message(m.id).await.unwrap().unwrap();
    assert_eq!(
        loaded.reactions,
        vec![
            ReactionSummary {
                emoji: "🎉".into(),
                count: 3,
                user_ids: vec![bob.id, carol.id, alice.id],
            },
            ReactionSummary {
                emoji: "👍".into(),
                count: 1,
                user_ids: vec![alice.id],
            },
        ],
        "emoji in order of first use, users in order of reacting"
    );
    let listed = store.list_messages(ch.id, query(10)).await.unwrap();
    assert_eq!(listed[0].reactions, loaded.reactions);
    assert_eq!(listed[1].reactions.len(), 1);
    assert_eq!(listed[1].reactions[0].user_ids, vec![bob.id]);

    assert!(store.remove_reaction(m.id, carol.id, "🎉").await.unwrap());
    assert!(!store.remove_reaction(m.id, carol.id, "🎉").await.unwrap());
    assert!(store.remove_reaction(m.id, alice.id, "👍").await.unwrap());
    let loaded = store.message(m.id).await.unwrap().unwrap();
    assert_eq!(
        loaded.reactions,
        vec![ReactionSummary {
            emoji: "🎉".into(),
            count: 2,
            user_ids: vec![bob.id, alice.id],
        }]
    );
}

async fn pins(store: Arc<dyn Store>) {
    let (alice, ws, ch) = setup(&store).await;
    let bob = user(&store, "bob").await;
    // Whoever pins is a member of the channel.
    store.add_member(ws.id, bob.id, Role::Member).await.unwrap();
    store.add_channel_member(ch.id, bob.id).await.unwrap();
    let a = send(&store, ch.id, alice.id, "a").await;
    let b = send(&store, ch.id, alice.id, "b").await;
    let other = channel(
        &store,
        ws.id,
        "other",
        ChannelKind::Public,
        alice.id,
        &[alice.id],
    )
    .await;
    let c = send(&store, other.id, alice.id, "c").await;

    let (pin_a, new) = store.pin(ch.id, a.id, alice.id).await.unwrap();
    assert!(new);
    assert_eq!(pin_a.channel_id, ch.id);
    assert_eq!(pin_a.pinned_by, alice.id);
    assert_eq!(pin_a.message.id, a.id);
    assert!(pin_a.message.pinned);
    // Pinning again changes nothing: same pinner and time.
    let (again, new) = store.pin(ch.id, a.id, bob.id).await.unwrap();
    assert!(!new);
    assert_eq!(again, pin_a);
    let (pin_b, _) = store.pin(ch.id, b.id, bob.id).await.unwrap();
    store.pin(other.id, c.id, alice.id).await.unwrap();

    assert_eq!(store.count_pins(ch.id).await.unwrap(), 2);
    let pins = store.pins(ch.id).await.unwrap();
    assert_eq!(
        pins.iter().map(|p| p.message.id).collect::<Vec<_>>(),
        vec![b.id, a.id],
        "most recently pinned first (in the same millisecond: the later message)"
    );
    assert_eq!(pins[0], pin_b);
    assert!(store.message(a.id).await.unwrap().unwrap().pinned);

    assert!(store.unpin(ch.id, a.id, bob.id).await.unwrap());
    assert!(!store.unpin(ch.id, a.id, bob.id).await.unwrap());
    assert!(!store.message(a.id).await.unwrap().unwrap().pinned);
    assert_eq!(store.count_pins(ch.id).await.unwrap(), 1);
    assert_eq!(store.count_pins(other.id).await.unwrap(), 1);
    assert!(store.pin(ch.id, MessageId(9_999), alice.id).await.is_err());
}

/// A pin on a deleted message — left by a version that did not hold the message while
/// pinning it — is neither listed nor counted toward the channel's limit.
async fn a_pin_left_on_a_tombstone_is_neither_listed_nor_counted(
    store: Arc<dyn Store>,
    url: String,
) {
    let (owner, _, ch) = setup(&store).await;
    let kept = send(&store, ch.id, owner.id, "kept").await;
    let gone = send(&store, ch.id, owner.id, "gone").await;
    store.pin(ch.id, kept.id, owner.id).await.unwrap();
    store.delete_message(gone.id).await.unwrap();
    let left_behind = format!(
        "INSERT INTO pins (channel_id, message_id, pinned_by, pinned_at) VALUES ({}, {}, {}, 0)",
        ch.id.0, gone.id.0, owner.id.0
    );
    // On a thread of its own: `execute`'s future cannot be proven `Send` (its generic
    // sqlx bounds), which a scenario's future must be.
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        runtime.block_on(chorus_chat::testing::execute(&url, &left_behind))
    })
    .await
    .unwrap()
    .unwrap();
    let listed = store.pins(ch.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|p| p.message.id).collect::<Vec<_>>(),
        vec![kept.id]
    );
    assert_eq!(store.count_pins(ch.id).await.unwrap(), 1);
}

// ---- reads --------------------------------------------------------------------------

async fn reads_unread_and_mentions(store: Arc<dyn Store>) {
    let (alice, ws, ch) = setup(&store).await;
    let bob = user(&store, "bob").await;
    store.add_member(ws.id, bob.id, Role::Member).await.unwrap();
    let early = send(&store, ch.id, alice.id, "before bob").await;
    // Joining starts with the history read.
    store.add_channel_member(ch.id, bob.id).await.unwrap();
    let state = store.read_state(ch.id, bob.id).await.unwrap().unwrap();
    assert_eq!(state.channel_id, ch.id);
    assert_eq!(state.message_id, early.id);
    assert_eq!((state.unread, state.unread_mentions), (0, 0));

    let m1 = send(&store, ch.id, alice.id, "one").await;
    let m2 = store
        .insert_message(NewMessage {
            mentions: vec![bob.id],
            ..new_message(ch.id, alice.id, "two @bob")
        })
        .await
        .unwrap()
        .message;
    send(&store, ch.id, bob.id, "bob's own").await;
    reply(&store, &m1, alice.id, "a reply, shown on its root").await;
    let m3 = send(&store, ch.id, alice.id, "three").await;
    let doomed = send(&store, ch.id, alice.id, "deleted").await;
    store.delete_message(doomed.id).await.unwrap();

    let state = store.read_state(ch.id, bob.id).await.unwrap().unwrap();
    assert_eq!((state.unread, state.unread_mentions), (3, 1));
    let alice_state = store.read_state(ch.id, alice.id).await.unwrap().unwrap();
    assert_eq!(alice_state.message_id, MessageId(0), "never read");
    assert_eq!(
        (alice_state.unread, alice_state.unread_mentions),
        (1, 0),
        "only bob's message is unread for alice"
    );
    let view = store.visible_channels(ws.id, bob.id, true).await.unwrap();
    assert_eq!(view[0].unread, 3);
    assert_eq!(view[0].unread_mentions, 1);
    assert_eq!(view[0].last_read, Some(early.id));
    let alice_view = store.visible_channels(ws.id, alice.id, true).await.unwrap();
    assert_eq!(alice_view[0].last_read, None);

    assert!(store.mark_read(ch.id, bob.id, m2.id).await.unwrap());
    let state = store.read_state(ch.id, bob.id).await.unwrap().unwrap();
    assert_eq!(state.message_id, m2.id);
    assert_eq!((state.unread, state.unread_mentions), (1, 0));
    // Never backwards, and not to the same place twice.
    assert!(!store.mark_read(ch.id, bob.id, m1.id).await.unwrap());
    assert!(!store.mark_read(ch.id, bob.id, m2.id).await.unwrap());
    assert_eq!(
        store
            .read_state(ch.id, bob.id)
            .await
            .unwrap()
            .unwrap()
            .message_id,
        m2.id
    );
    assert!(store.mark_read(ch.id, bob.id, m3.id).await.unwrap());
    let state = store.read_state(ch.id, bob.id).await.unwrap().unwrap();
    assert_eq!((state.unread, state.unread_mentions), (0, 0));

    let carol = user(&store, "carol").await;
    assert_eq!(store.read_state(ch.id, carol.id).await.unwrap(), None);
    assert!(!store.mark_read(ch.id, carol.id, m3.id).await.unwrap());
}

/// Writers commit messages concurrently while a reader pages forward with `after`
/// from the last id it saw, as a reconnecting client does: it must see every message.
/// (With ids from a sequence, an insert that took an id early but committed late
/// would be skipped if the backend did not make a channel's ids commit in order.)
async fn after_paging_never_skips_a_late_commit(store: Arc<dyn Store>) {
    let (alice, _, ch) = setup(&store).await;
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 25;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut sent = Vec::new();
                for i in 0..PER_WRITER {
                    let m = store
                        .insert_message(new_message(ch.id, alice.id, &format!("w{w} m{i}")))
                        .await
                        .unwrap()
                        .message;
                    sent.push(m.id.0);
                }
                sent
            })
        })
        .collect();
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            // From the start: without `after`, a page is the newest messages, and the
            // first read could come when more than a page was sent already.
            let mut cursor = Some(MessageId(0));
            while seen.len() < WRITERS * PER_WRITER {
                let page = store
                    .list_messages(
                        ch.id,
                        MessageQuery {
                            after: cursor,
                            ..query(50)
                        },
                    )
                    .await
                    .unwrap();
                match page.last() {
                    Some(last) => cursor = Some(last.id),
                    None => tokio::task::yield_now().await,
                }
                seen.extend(ids(&page));
            }
            seen
        })
    };
    let mut all = Vec::new();
    for w in writers {
        all.extend(w.await.unwrap());
    }
    all.sort();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(30), reader)
        .await
        .expect("the reader missed messages and kept waiting for them")
        .unwrap();
    assert_eq!(seen, all, "every message, once, in id order");
}

// ---- PostgreSQL outages -------------------------------------------------------------

/// A TCP forwarder to PostgreSQL that can be cut (every link dropped, new ones refused
/// by closing them at once) and restored: a database outage without stopping the
/// server the other tests share.
struct Cuttable {
    addr: std::net::SocketAddr,
    down: Arc<std::sync::atomic::AtomicBool>,
    links: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Cuttable {
    async fn start(target: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let links = Arc::new(std::sync::Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let down = down.clone();
            let links = links.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if down.load(Ordering::SeqCst) {
                        continue; // dropped: the connection closes at once
                    }
                    let link = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    links.lock().unwrap().push(link);
                }
            }
        });
        Self {
            addr,
            down,
            links,
            accept,
        }
    }

    fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// While the database cannot be reached, operations fail as `Unavailable` (503), not
/// `Internal`; once it is back, the same store works again without a restart.
async fn postgres_outage_is_unavailable_and_recovers(admin_url: Option<String>) {
    let admin_url = required_postgres(admin_url);
    let db = ScratchDatabase::create(&admin_url).await.unwrap();
    let mut url = url::Url::parse(db.url()).unwrap();
    let target = tokio::net::lookup_host((
        url.host_str().unwrap().to_owned(),
        url.port().unwrap_or(5432),
    ))
    .await
    .unwrap()
    .next()
    .unwrap();
    let proxy = Cuttable::start(target).await;
    url.set_port(Some(proxy.addr.port())).unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    let store: Arc<dyn Store> = Arc::new(
        PgStore::connect(url.as_str(), 2, Clock::system())
            .await
            .unwrap(),
    );
    let alice = user(&store, "alice").await;

    proxy.cut();
    let during = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        store.user_by_name("alice"),
    )
    .await
    .expect("a request during the outage must fail, not hang");
    assert!(
        matches!(during, Err(ChatError::Unavailable(_))),
        "{during:?}"
    );
    let write = store.set_status_text(alice.id, "lost").await;
    assert!(matches!(write, Err(ChatError::Unavailable(_))), "{write:?}");

    proxy.restore();
    assert_eq!(
        store.user_by_name("alice").await.unwrap().map(|u| u.id),
        Some(alice.id)
    );
    assert_eq!(
        store.presence(alice.id).await.unwrap().unwrap().status_text,
        "",
        "the write during the outage did not happen"
    );
}

// ---- agent-aware delivery -------------------------------------------------------------

async fn agent(store: &Arc<dyn Store>, name: &str, webhook: Option<&str>) -> User {
    let user = store
        .create_user(NewUser {
            name: name.into(),
            display_name: name.into(),
            kind: UserKind::Agent,
            webhook_url: None,
            is_admin: false,
        })
        .await
        .unwrap();
    match webhook {
        Some(url) => store
            .set_webhook(user.id, Some(url), Some("0123456789abcdef"))
            .await
            .unwrap(),
        None => user,
    }
}

async fn delivery_lists_observers_and_agent_members(store: Arc<dyn Store>) {
    let (owner, ws, ch) = setup(&store).await;
    let bot = agent(&store, "bot", Some("http://127.0.0.1:9/h")).await;
    let quiet = agent(&store, "quiet", None).await;
    let outsider = agent(&store, "outsider", None).await;
    for u in [&bot, &quiet] {
        store.add_member(ws.id, u.id, Role::Member).await.unwrap();
        store.add_channel_member(ch.id, u.id).await.unwrap();
    }
    assert_eq!(bot.webhook_url.as_deref(), Some("http://127.0.0.1:9/h"));
    // Only agent members, by id, with their webhook.
    let agents = store.agent_members(ch.id).await.unwrap();
    let got: Vec<(UserId, Option<String>)> =
        agents.into_iter().map(|a| (a.id, a.webhook_url)).collect();
    assert_eq!(
        got,
        [
            (bot.id, Some("http://127.0.0.1:9/h".to_owned())),
            (quiet.id, None)
        ]
    );
    assert!(
        !store
            .agent_members(ch.id)
            .await
            .unwrap()
            .iter()
            .any(|a| a.id == outsider.id)
    );
    // Lists are replaced whole and kept apart.
    let on_duty = DeliveryList::OnDuty;
    store
        .set_delivery_list(ch.id, on_duty, &[bot.id, owner.id], no_events())
        .await
        .unwrap();
    store
        .set_delivery_list(ch.id, DeliveryList::Wake, &[quiet.id], no_events())
        .await
        .unwrap();
    assert_eq!(
        store.delivery_list(ch.id, on_duty).await.unwrap(),
        [owner.id, bot.id]
    );
    store
        .set_delivery_list(ch.id, on_duty, &[quiet.id], no_events())
        .await
        .unwrap();
    assert_eq!(
        store.delivery_list(ch.id, on_duty).await.unwrap(),
        [quiet.id]
    );
    assert_eq!(
        store
            .delivery_list(ch.id, DeliveryList::Wake)
            .await
            .unwrap(),
        [quiet.id]
    );
    store
        .set_observers(ws.id, &[owner.id], no_events())
        .await
        .unwrap();
    assert_eq!(store.observers(ws.id).await.unwrap(), [owner.id]);
    store.set_observers(ws.id, &[], no_events()).await.unwrap();
    assert!(store.observers(ws.id).await.unwrap().is_empty());
    // Clearing a webhook clears its URL.
    let cleared = store.set_webhook(bot.id, None, None).await.unwrap();
    assert_eq!(cleared.webhook_url, None);
}

async fn round_robin_turns_compare_and_set(store: Arc<dyn Store>) {
    let (_, _, ch) = setup(&store).await;
    let a = agent(&store, "a", None).await;
    let b = agent(&store, "b", None).await;
    assert_eq!(store.last_woken(ch.id).await.unwrap(), None);
    assert!(store.advance_turn(ch.id, None, a.id).await.unwrap());
    // A writer that read the old state loses.
    assert!(!store.advance_turn(ch.id, None, b.id).await.unwrap());
    assert!(!store.advance_turn(ch.id, Some(b.id), a.id).await.unwrap());
    assert!(store.advance_turn(ch.id, Some(a.id), b.id).await.unwrap());
    // Staying on the same agent is a successful move too.
    assert!(store.advance_turn(ch.id, Some(b.id), b.id).await.unwrap());
    assert_eq!(store.last_woken(ch.id).await.unwrap(), Some(b.id));
}

async fn turns_raced_by_many_writers_advance_once_each(store: Arc<dyn Store>) {
    let (_, _, ch) = setup(&store).await;
    let a = agent(&store, "a", None).await;
    let b = agent(&store, "b", None).await;
    store.advance_turn(ch.id, None, a.id).await.unwrap();
    // Eight writers all read `a` and try to move the turn to `b`: one wins.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.advance_turn(ch.id, Some(a.id), b.id).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
}

fn delivery(user: UserId, event: &str, due: i64) -> NewWebhookDelivery {
    NewWebhookDelivery {
        user_id: user,
        event_id: event.into(),
        url: "http://127.0.0.1:9/h".into(),
        body: format!(r#"{{"id":"{event}"}}"#),
        due_at: Timestamp(due),
    }
}

/// A claim takes at most `per_user` of one user's due deliveries (the oldest first) and
/// none of a `busy` user's, so one receiver's backlog does not fill the worker's slots.
async fn a_webhook_claim_shares_its_slots_between_users(store: Arc<dyn Store>) {
    let slow = agent(&store, "slow", Some("http://127.0.0.1:9/h")).await;
    let quick = agent(&store, "quick", Some("http://127.0.0.1:9/h")).await;
    let now = Clock::system().now_ms();
    for (n, user) in [slow.id, slow.id, slow.id, quick.id]
        .into_iter()
        .enumerate()
    {
        let due = now - 100 + n as i64;
        assert!(
            store
                .enqueue_webhook(delivery(user, &format!("e{n}"), due))
                .await
                .unwrap()
        );
    }
    let claim = |at: i64, per_user: u32, busy: Vec<UserId>| {
        claimed_events(
            &store,
            at,
            ClaimLimits {
                total: 10,
                per_user,
                busy,
            },
        )
    };
    assert_eq!(
        claim(now, 1, Vec::new()).await,
        ["e0", "e3"],
        "one each, oldest first"
    );
    assert!(
        claim(now, 1, vec![slow.id]).await.is_empty(),
        "a busy user's wait; the other has none due"
    );
    assert_eq!(claim(now, 2, Vec::new()).await, ["e1", "e2"]);
    // Leased: due again once the lease ends, all at once without limits.
    assert_eq!(
        claim(now + 6_000, 10, Vec::new()).await,
        ["e0", "e1", "e2", "e3"]
    );
}

/// The event ids (sorted) of the deliveries a claim at `at` takes, leased for 5 s.
async fn claimed_events(store: &Arc<dyn Store>, at: i64, limits: ClaimLimits) -> Vec<String> {
    let claimed = store
        .claim_due_webhooks(Timestamp(at), Timestamp(at + 5_000), &limits)
        .await
        .unwrap();
    let mut events: Vec<String> = claimed.into_iter().map(|d| d.event_id).collect();
    events.sort();
    events
}

/// With users busy, a claim walks the other users with pending deliveries (never
/// reading past the busy ones' backlogs) and still takes the oldest due first: each
/// user's oldest `per_user` (ties on their time included, ranked by id), none of a user
/// whose pending ones are not due, the oldest `total` of all.
async fn a_claim_with_users_busy_takes_everyone_elses_oldest_first(store: Arc<dyn Store>) {
    let url = Some("http://127.0.0.1:9/h");
    let slow = agent(&store, "slow", url).await;
    let (a, b, c) = (
        agent(&store, "a", url).await,
        agent(&store, "b", url).await,
        agent(&store, "c", url).await,
    );
    let (d, e) = (agent(&store, "d", url).await, agent(&store, "e", url).await);
    let now = Clock::system().now_ms();
    let mut queued = Vec::new();
    // The busy user's backlog is the oldest of all.
    for n in 0..30 {
        queued.push((slow.id, format!("slow{n:02}"), now - 1_000 + n));
    }
    queued.extend([
        (d.id, "d0".to_owned(), now - 600),
        (a.id, "a0".to_owned(), now - 500),
        (c.id, "c0".to_owned(), now - 450),
        (a.id, "a1".to_owned(), now - 400),
        (a.id, "a2".to_owned(), now - 400),
        (c.id, "c1".to_owned(), now - 300),
        (e.id, "e0".to_owned(), now - 200),
        (e.id, "e1".to_owned(), now + 60_000),
        (b.id, "b0".to_owned(), now + 60_000),
    ]);
    for (user, event, due) in queued {
        assert!(
            store
                .enqueue_webhook(delivery(user, &event, due))
                .await
                .unwrap()
        );
    }
    let claim = |total: u32, per_user: u32, busy: Vec<UserId>| {
        claimed_events(
            &store,
            now,
            ClaimLimits {
                total,
                per_user,
                busy,
            },
        )
    };
    assert_eq!(
        claim(2, 1, vec![slow.id]).await,
        ["a0", "d0"],
        "the two oldest heads"
    );
    assert_eq!(
        claim(10, 2, vec![slow.id, d.id]).await,
        ["a1", "a2", "c0", "c1", "e0"],
        "two each (a's two share a time), e's second not due, b's none"
    );
    assert!(claim(10, 1, vec![slow.id]).await.is_empty());
    assert_eq!(claim(10, 1, Vec::new()).await, ["slow00"]);
}

async fn webhook_queue_claims_records_and_lists(store: Arc<dyn Store>) {
    let bot = agent(&store, "bot", Some("http://127.0.0.1:9/h")).await;
    let now = Clock::system().now_ms();
    assert!(
        store
            .enqueue_webhook(delivery(bot.id, "e1", now))
            .await
            .unwrap()
    );
    // The same event for the same agent is queued once.
    assert!(
        !store
            .enqueue_webhook(delivery(bot.id, "e1", now))
            .await
            .unwrap()
    );
    assert!(
        store
            .enqueue_webhook(delivery(bot.id, "e2", now + 60_000))
            .await
            .unwrap()
    );
    assert_eq!(
        store.next_webhook_due().await.unwrap(),
        Some(Timestamp(now))
    );

    // Only what is due, leased until the given time.
    let claimed = store
        .claim_due_webhooks(
            Timestamp(now),
            Timestamp(now + 5_000),
            &ClaimLimits::total(10),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let due = &claimed[0];
    assert_eq!((due.event_id.as_str(), due.attempts), ("e1", 0));
    assert_eq!(due.secret.as_deref(), Some("0123456789abcdef"));
    assert_eq!(due.body, r#"{"id":"e1"}"#);
    assert!(
        store
            .claim_due_webhooks(
                Timestamp(now + 1),
                Timestamp(now + 5_000),
                &ClaimLimits::total(10)
            )
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );

    // A failure, then a success.
    let attempt = |n, code: Option<i64>, error: Option<&str>| WebhookAttempt {
        attempt: n,
        at: Timestamp(now + n),
        status_code: code,
        error: error.map(str::to_owned),
        duration_ms: 3,
    };
    let retry = AttemptOutcome::Retry {
        at: Timestamp(now + 10),
    };
    store
        .record_webhook_attempt(due.id, &attempt(1, Some(500), Some("HTTP 500")), retry)
        .await
        .unwrap();
    let again = store
        .claim_due_webhooks(
            Timestamp(now + 10),
            Timestamp(now + 20),
            &ClaimLimits::total(10),
        )
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    store
        .record_webhook_attempt(
            due.id,
            &attempt(2, Some(200), None),
            AttemptOutcome::Delivered,
        )
        .await
        .unwrap();
    assert!(
        store
            .claim_due_webhooks(
                Timestamp(now + 100_000),
                Timestamp(now + 200_000),
                &ClaimLimits::total(10)
            )
            .await
            .unwrap()
            .iter()
            .all(|d| d.event_id != "e1"),
        "a delivered event is never claimed again"
    );

    let log = store.webhook_deliveries(bot.id, 10).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].event_id, "e2", "newest first");
    let done = &log[1];
    assert_eq!(done.status, WebhookStatus::Delivered);
    assert_eq!(done.attempts, 2);
    assert_eq!(done.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(done.next_attempt_at, None);
    assert_eq!(done.finished_at, Some(Timestamp(now + 2)));
    let codes: Vec<Option<i64>> = done.attempt_log.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(200)]);
    assert_eq!(log[0].status, WebhookStatus::Pending);
    assert!(log[0].attempt_log.is_empty());

    // (e2, claimed above, leased until now + 200 s.) The agent's webhook replaced (say
    // it leaked): what is pending goes to the new one,
    // signed with the new secret, and the log says so.
    store
        .set_webhook(
            bot.id,
            Some("http://hooks.example/new"),
            Some("fedcba9876543210"),
        )
        .await
        .unwrap();
    let moved = store
        .claim_due_webhooks(
            Timestamp(now + 200_000),
            Timestamp(now + 205_000),
            &ClaimLimits::total(10),
        )
        .await
        .unwrap();
    let moved: Vec<(&str, &str, Option<&str>)> = moved
        .iter()
        .map(|d| (d.event_id.as_str(), d.url.as_str(), d.secret.as_deref()))
        .collect();
    assert_eq!(
        moved,
        [("e2", "http://hooks.example/new", Some("fedcba9876543210"))]
    );
    let log = store.webhook_deliveries(bot.id, 10).await.unwrap();
    assert_eq!(log[0].url, "http://hooks.example/new");
    assert_eq!(
        log[1].url, "http://127.0.0.1:9/h",
        "the delivered one as it went"
    );
    // Taken away: what is pending is given up, sent nowhere.
    store
        .enqueue_webhook(delivery(bot.id, "e3", now))
        .await
        .unwrap();
    store.set_webhook(bot.id, None, None).await.unwrap();
    assert!(
        store
            .claim_due_webhooks(
                Timestamp(now + 210_000),
                Timestamp(now + 215_000),
                &ClaimLimits::total(10)
            )
            .await
            .unwrap()
            .is_empty()
    );
    let log = store.webhook_deliveries(bot.id, 10).await.unwrap();
    assert_eq!(log[0].event_id, "e3");
    assert_eq!(log[0].status, WebhookStatus::Failed);
    assert_eq!(log[0].last_error.as_deref(), Some(NO_WEBHOOK));
}

async fn webhook_claims_never_overlap(store: Arc<dyn Store>) {
    let bot = agent(&store, "bot", Some("http://127.0.0.1:9/h")).await;
    let now = Clock::system().now_ms();
    for i in 0..40 {
        store
            .enqueue_webhook(delivery(bot.id, &format!("e{i}"), now))
            .await
            .unwrap();
    }
    // Four workers claim in small batches at once: every delivery once.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store
                        .claim_due_webhooks(
                            Timestamp(now),
                            Timestamp(now + 60_000),
                            &ClaimLimits::total(3),
                        )
                        .await
                        .unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|d| d.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 40);
    assert_eq!(distinct.len(), 40);
}

// ---- SQLite only ----------------------------------------------------------------------

/// Under steady writes with readers always at work, SQLite's own checkpoints never get
/// to start the WAL over, and it grows with every write (each page lookup walks it). The
/// store's checkpointer restarts it. Each send writes about three pages; without the
/// restarts the WAL holds them all (measured: 99 MB here), with them it stays under one
/// page per send (about 20 MB).
async fn sqlite_wal_stays_short_under_steady_reads_and_writes() {
    const SENDS: usize = 8_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chorus.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, Clock::system()).await.unwrap());
    let (owner, _, ch) = setup(&store).await;
    let wal = dir.path().join("chorus.db-wal");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (store, done) = (store.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    store.list_messages(ch.id, query(20)).await.unwrap();
                }
            })
        })
        .collect();
    let text = "x".repeat(200);
    let mut largest = 0;
    for i in 0..SENDS {
        send(&store, ch.id, owner.id, &text).await;
        if i % 500 == 0 {
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    let page_per_send = SENDS as u64 * 4096;
    eprintln!("largest WAL: {largest} bytes");
    assert!(
        largest < page_per_send,
        "the WAL grew to {largest} bytes for {SENDS} sends"
    );
}

/// The batcher's failures roll back and leave the writer connection usable (no
/// transaction open) for the next send. A batch whose events cannot be logged (a row put
/// at the scope's next offset behind the store's back) fails on both of the batcher's
/// paths (one call with the ids it knows, then two calls): the send fails, nothing of it
/// stays (no message, the scope's head where it was). A message inserted behind its back
/// makes the ids it knows wrong: the one-call path fails, rolls back, and the two-call
/// path writes the send.
async fn sqlite_a_batch_whose_events_fail_leaves_nothing_and_the_writer_usable() {
    use chorus_chat::store::Inserted;
    use chorus_realtime::{Publish, Scope};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chorus.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, Clock::system()).await.unwrap());
    let (owner, _, ch) = setup(&store).await;
    let scope = Scope::parse(&format!("channel:{}", ch.id.0)).unwrap();
    let logged_send = |text: &str| {
        let (store, scope) = (store.clone(), scope.clone());
        let new = new_message(ch.id, owner.id, text);
        async move {
            let events = Box::new(move |i: &Inserted| Outbox {
                events: vec![Publish::new(scope.clone(), "message.created", &i.message)],
                webhooks: Vec::new(),
                then: None,
            });
            store.insert_message_logged(new, events).await
        }
    };
    // Two sends: the batcher knows the ids' sequence (the one-call path) after them.
    for text in ["one", "two"] {
        logged_send(text).await.unwrap();
    }
    let (_, head) = store.scope_events(&scope, 0, 10).await.unwrap();
    let side = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (scope, seq, kind, data, created_at) VALUES ($1, $2, 'x', '{}', 0)",
    )
    .bind(scope.as_str())
    .bind(head as i64 + 1)
    .execute(&side)
    .await
    .unwrap();

    let failed = logged_send("three").await;
    assert!(
        failed.is_err(),
        "the send whose event cannot be logged fails"
    );
    let three: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE text = 'three'")
        .fetch_one(&side)
        .await
        .unwrap();
    assert_eq!(three, 0, "nothing of the failed send stays");
    assert_eq!(
        store.scope_head(&scope).await.unwrap(),
        head,
        "the head did not move"
    );

    sqlx::query("DELETE FROM events WHERE kind = 'x'")
        .execute(&side)
        .await
        .unwrap();
    let (inserted, logged) = logged_send("four").await.unwrap();
    assert_eq!(inserted.message.text, "four");
    assert_eq!(
        logged[0].offset,
        Some(head + 1),
        "the writer goes on at the next offset"
    );

    let behind: i64 = sqlx::query_scalar(
        "INSERT INTO messages (channel_id, author_id, text, created_at) VALUES ($1, $2, 'behind', 0) RETURNING id",
    )
    .bind(ch.id.0)
    .bind(owner.id.0)
    .fetch_one(&side)
    .await
    .unwrap();
    side.close().await;
    let (inserted, logged) = logged_send("five").await.unwrap();
    assert!(
        inserted.message.id.0 > behind,
        "the ids it knew were not used"
    );
    assert_eq!(logged[0].offset, Some(head + 2));
    let (events, _) = store.scope_events(&scope, head, 10).await.unwrap();
    assert_eq!(events.len(), 2);
    let five = store.message(inserted.message.id).await.unwrap().unwrap();
    assert_eq!(five.text, "five");
}

// ---- server keys ----------------------------------------------------------------------

async fn server_keys_are_found_by_hash_listed_and_deleted(store: Arc<dyn Store>) {
    use chorus_chat::store::{KeyPermission, NewServerKey};

    let orders = store
        .create_server_key(NewServerKey {
            name: "orders".into(),
            hash: "hash-orders".into(),
            permissions: vec![KeyPermission::Publish, KeyPermission::StatsRead],
            publish_prefixes: Some(vec!["topic:orders.".into(), "topic:billing".into()]),
        })
        .await
        .unwrap();
    assert_eq!(orders.name, "orders");
    assert_eq!(
        orders.permissions,
        [KeyPermission::Publish, KeyPermission::StatsRead]
    );
    assert_eq!(
        orders.publish_prefixes.as_deref(),
        Some(&["topic:orders.".to_owned(), "topic:billing".to_owned()][..])
    );
    let stats = store
        .create_server_key(NewServerKey {
            name: "dashboards".into(),
            hash: "hash-stats".into(),
            permissions: vec![KeyPermission::StatsRead],
            publish_prefixes: None,
        })
        .await
        .unwrap();
    assert_eq!(stats.publish_prefixes, None);
    assert_ne!(orders.id, stats.id);

    // The hash finds the key, as stored.
    assert_eq!(
        store.server_key_by_hash("hash-orders").await.unwrap(),
        Some(orders.clone())
    );
    assert_eq!(store.server_key_by_hash("nope").await.unwrap(), None);
    // One key per hash.
    let twin = store
        .create_server_key(NewServerKey {
            name: "twin".into(),
            hash: "hash-orders".into(),
            permissions: vec![KeyPermission::Publish],
            publish_prefixes: None,
        })
        .await;
    assert!(twin.is_err(), "a second key with the same hash");

    assert_eq!(
        store.server_keys().await.unwrap(),
        [orders.clone(), stats.clone()]
    );
    assert!(store.delete_server_key(orders.id).await.unwrap());
    assert!(!store.delete_server_key(orders.id).await.unwrap());
    assert_eq!(store.server_key_by_hash("hash-orders").await.unwrap(), None);
    assert_eq!(store.server_keys().await.unwrap(), [stats]);
}
