//! TLS on the links Chorus makes, with real certificates from a CA made per test:
//! `https://` webhooks to a receiver whose CA is given by `webhook_ca_file` (and not
//! trusted without it), the target check still in force for them, and the Rust client
//! over `https://` and `wss://` (through a TLS-terminating proxy in front of the server).
//! PostgreSQL and Redis over TLS run in `scripts/test` (`sslmode=verify-full`) and in
//! `crates/chorus/tests/multi_node.rs` (`rediss://`).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chorus_client::{Client, ExtraRoots, Options};
use common::{ADMIN_TOKEN, TestServer, TestUser, WAIT};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use reqwest::StatusCode;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A throwaway CA (its PEM in a file, as an operator would hand it over) and a server
/// certificate it signed for `localhost` and `127.0.0.1`.
struct Pki {
    _dir: tempfile::TempDir,
    ca_file: std::path::PathBuf,
    acceptor: TlsAcceptor,
}

impl Pki {
    fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name
            .push(DnType::CommonName, "Chorus test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = leaf.signed_by(&key, &issuer).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Self {
            _dir: dir,
            ca_file,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }
    }
}

/// A request as the receiver saw it: the name the client asked for (SNI) and the head.
type Seen = (Option<String>, String);

/// An HTTPS receiver on 127.0.0.1 that answers every request 200 and records the name
/// each client asked for (SNI) and each request's head; a handshake that fails (the
/// client did not trust the certificate) is counted.
#[derive(Clone)]
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Seen>>>,
    failed_handshakes: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(pki: &Pki) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let me = Self {
            port: listener.local_addr().unwrap().port(),
            requests: Arc::default(),
            failed_handshakes: Arc::default(),
            accepted: Arc::default(),
        };
        let acceptor = pki.acceptor.clone();
        let receiver = me.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                receiver.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(receiver.clone().answer(acceptor.clone(), tcp));
            }
        });
        me
    }

    async fn answer(self, acceptor: TlsAcceptor, tcp: TcpStream) {
        let mut tls = match acceptor.accept(tcp).await {
            Ok(tls) => tls,
            Err(_) => {
                self.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                return;
            }
        };
        let sni = tls.get_ref().1.server_name().map(str::to_owned);
        let Some((head, _body)) = common::read_request(&mut tls).await else {
            return;
        };
        self.requests.lock().unwrap().push((sni, head));
        let _ = tls
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        let _ = tls.shutdown().await;
    }

    fn requests(&self) -> Vec<Seen> {
        self.requests.lock().unwrap().clone()
    }
}

/// An agent whose webhook is `url`, a member of a new channel of alice's.
async fn agent_with_webhook(s: &TestServer, name: &str, url: &str) -> (TestUser, TestUser, i64) {
    let w = s.world().await;
    let resp = s
        .post(
            "/api/v1/users",
            ADMIN_TOKEN,
            json!({"name": name, "kind": "agent", "webhook_url": url}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    let bot = TestUser {
        id: resp.body["user"]["id"].as_i64().unwrap(),
        name: name.to_owned(),
        token: resp.body["token"].as_str().unwrap().to_owned(),
    };
    s.add_member(&w.alice, w.ws, &bot, "member").await;
    let ch = s
        .create_channel(&w.alice, w.ws, "hooks", "public", &[&bot])
        .await;
    (w.alice, bot, ch)
}

/// The bot's one delivery as the admin sees it, once it is no longer pending (bounded
/// by [`WAIT`]).
async fn settled(s: &TestServer, bot: &TestUser) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let log = s
            .get(
                &format!("/api/v1/users/{}/webhook-deliveries", bot.id),
                ADMIN_TOKEN,
            )
            .await
            .expect_status(StatusCode::OK)
            .body;
        let log = log.as_array().unwrap();
        if log.len() == 1 && log[0]["status"] != "pending" {
            return log[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still pending: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn quick_retries(c: &mut chorus_server::Config) {
    c.webhook_backoff_ms = 50;
    c.webhook_backoff_max_ms = 100;
    c.webhook_max_attempts = 2;
}

#[tokio::test]
async fn an_https_webhook_is_delivered_when_its_ca_is_configured() {
    let pki = Pki::new();
    let receiver = Receiver::start(&pki).await;
    let ca_file = pki.ca_file.clone();
    let s = TestServer::start_with(|c| {
        quick_retries(c);
        c.webhook_ca_file = Some(ca_file);
    })
    .await;
    // By name: the checking resolver picks the address, the URL's host is the SNI.
    let url = format!("https://localhost:{}/hook", receiver.port);
    let (alice, bot, ch) = agent_with_webhook(&s, "tls-bot", &url).await;
    s.send(&alice, ch, "@tls-bot ping").await;

    let seen = settled(&s, &bot).await;
    assert_eq!(seen["status"], "delivered", "{seen}");
    assert_eq!(seen["attempts"], 1, "{seen}");
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let (sni, head) = &requests[0];
    assert_eq!(sni.as_deref(), Some("localhost"));
    assert!(head.starts_with("POST /hook HTTP/1.1\r\n"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("chorus-signature: sha256="), "{head}");
    assert!(
        head.contains(&format!("host: localhost:{}", receiver.port)),
        "{head}"
    );
    assert_eq!(receiver.failed_handshakes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_https_webhook_to_an_untrusted_certificate_fails_and_is_never_sent() {
    let pki = Pki::new();
    let receiver = Receiver::start(&pki).await;
    // No webhook_ca_file: the receiver's CA is unknown.
    let s = TestServer::start_with(quick_retries).await;
    let url = format!("https://127.0.0.1:{}/hook", receiver.port);
    let (alice, bot, ch) = agent_with_webhook(&s, "untrusting-bot", &url).await;
    s.send(&alice, ch, "@untrusting-bot ping").await;

    let seen = settled(&s, &bot).await;
    assert_eq!(seen["status"], "failed", "{seen}");
    assert_eq!(seen["attempts"], 2, "{seen}");
    let error = seen["last_error"].as_str().unwrap();
    assert!(
        error.contains("connection failed") && error.contains("certificate"),
        "{error}"
    );
    // Both attempts reached the receiver and stopped at the handshake: no request.
    assert!(receiver.requests().is_empty());
    assert_eq!(receiver.failed_handshakes.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn https_does_not_open_private_targets() {
    let pki = Pki::new();
    let receiver = Receiver::start(&pki).await;
    let ca_file = pki.ca_file.clone();
    let s = TestServer::start_with(|c| {
        quick_retries(c);
        c.webhook_allow_private = false;
        c.webhook_ca_file = Some(ca_file);
    })
    .await;
    let url = format!("https://localhost:{}/hook", receiver.port);
    let (alice, bot, ch) = agent_with_webhook(&s, "inside-bot", &url).await;
    s.send(&alice, ch, "@inside-bot ping").await;

    let seen = settled(&s, &bot).await;
    assert_eq!(seen["status"], "refused", "{seen}");
    assert_eq!(receiver.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_webhook_ca_file_that_is_not_a_certificate_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "not a certificate\n").unwrap();
    let config = chorus_server::Config {
        data_dir: dir.path().to_path_buf(),
        webhook_ca_file: Some(bad),
        ..chorus_server::Config::default()
    };
    let err = chorus_server::build(config).await.err().unwrap();
    assert!(format!("{err:#}").contains("webhook_ca_file"), "{err:#}");
}

/// Terminates TLS on 127.0.0.1 and relays each connection to `upstream` (plain HTTP),
/// as a load balancer in front of Chorus would.
async fn tls_proxy(pki: &Pki, upstream: SocketAddr) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = pki.acceptor.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn the_rust_client_works_over_https_and_wss_with_a_ca_file() {
    let pki = Pki::new();
    let s = TestServer::start().await;
    let port = tls_proxy(&pki, s.addr).await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "secure", "public", &[&w.bob])
        .await;
    let base = format!("https://localhost:{port}");

    // Without the CA, neither transport trusts the server.
    let untrusting = Client::new(&base, w.bob.token.as_str()).unwrap();
    let err = untrusting.me().await.unwrap_err();
    assert!(matches!(err, chorus_client::Error::Http(_)), "{err}");
    let options = Options {
        reconnect: None,
        ..Options::default()
    };
    let Err(err) = untrusting.realtime_with(options).await else {
        panic!("wss connected without trusting the server's CA");
    };
    assert!(matches!(err, chorus_client::Error::WebSocket(_)), "{err}");

    let roots = ExtraRoots::from_pem_file(&pki.ca_file).unwrap();
    let alice = Client::with_roots(&base, w.alice.token.as_str(), Some(roots.clone())).unwrap();
    let bob = Client::with_roots(&base, w.bob.token.as_str(), Some(roots)).unwrap();
    assert_eq!(bob.me().await.unwrap().name, "bob");
    let mut live = alice.realtime().await.unwrap();
    let sent = bob
        .send_message(
            chorus_client::ChannelId(ch),
            &chorus_client::SendMessage::new("over TLS"),
            None,
        )
        .await
        .unwrap();
    let event = tokio::time::timeout(WAIT, async {
        loop {
            let event = live.next_event().await.expect("the connection stays open");
            if event.kind == "message.created" {
                return event;
            }
        }
    })
    .await
    .expect("the message arrives over wss");
    assert_eq!(event.scope, format!("channel:{ch}"));
    assert_eq!(event.data["id"], json!(sent.message.id.0));
}
