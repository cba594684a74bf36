//! JWTs as identity providers issue them: required `exp`, `nbf`, `iss` and `aud`;
//! HS256, and RS256 / ES256 with a PEM key or a JWKS (file, or URL with key rotation);
//! a socket closes with 3502 when its JWT expires unless it sent `refresh`; users
//! provisioned from a token's claims.
//!
//! Keys are generated here; no key file is committed.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{ADMIN_TOKEN, TestServer};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// At least 32 bytes: a shorter HS256 secret stops the start.
const SECRET: &str = "an-application-secret-at-least-32-bytes";
const ISSUER: &str = "https://idp.example.test/";
const AUDIENCE: &str = "chorus";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn hs256(claims: Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        &claims,
    )
}

/// `sub` with an `exp` `secs` from now.
fn expiring(sub: &str, secs: i64) -> Value {
    json!({ "sub": sub, "exp": now() + secs })
}

/// A signing key and its public half as PEM and as a JWK.
struct KeyPair {
    alg: Algorithm,
    signing: EncodingKey,
    public_pem: String,
}

impl KeyPair {
    /// One RSA key per test binary: generating one is slow without optimisations.
    fn rsa() -> &'static KeyPair {
        static KEY: OnceLock<KeyPair> = OnceLock::new();
        KEY.get_or_init(|| {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::pkcs8::{EncodePublicKey, LineEnding};
            let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
            KeyPair {
                alg: Algorithm::RS256,
                signing: EncodingKey::from_rsa_der(private.to_pkcs1_der().unwrap().as_bytes()),
                public_pem: private
                    .to_public_key()
                    .to_public_key_pem(LineEnding::LF)
                    .unwrap(),
            }
        })
    }

    fn ec() -> KeyPair {
        use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let private = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        KeyPair {
            alg: Algorithm::ES256,
            signing: EncodingKey::from_ec_der(private.to_pkcs8_der().unwrap().as_bytes()),
            public_pem: private
                .public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        }
    }

    fn jwk(&self, kid: &str) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.signing, self.alg).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        jwk
    }

    fn token(&self, kid: Option<&str>, claims: &Value) -> String {
        sign(self.alg, kid, &self.signing, claims)
    }
}

fn jwks(keys: &[Jwk]) -> String {
    serde_json::to_string(&JwkSet {
        keys: keys.to_vec(),
    })
    .unwrap()
}

/// Writes `text` to a file that lives as long as the returned guard.
fn file_with(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// A JWKS served over HTTP on 127.0.0.1: answers every request with the current
/// document and counts the requests.
struct JwksServer {
    url: String,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(document: String) -> Self {
        Self::answering(document, |body| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        })
        .await
    }

    /// One that answers every request with a redirect to `location`.
    async fn redirecting(location: String) -> Self {
        Self::answering(String::new(), move |_| {
            format!(
                "HTTP/1.1 302 Found\r\nLocation: {location}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
        })
        .await
    }

    /// Answers every request with `respond(current document)`.
    async fn answering(
        document: String,
        respond: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (doc, count) = (document.clone(), fetches.clone());
        let respond = Arc::new(respond);
        tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                let (doc, count, respond) = (doc.clone(), count.clone(), respond.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.ends_with(b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let response = respond(&doc.lock().unwrap().clone());
                    let _ = tcp.write_all(response.as_bytes()).await;
                    let _ = tcp.shutdown().await;
                });
            }
        });
        Self {
            url,
            document,
            fetches,
        }
    }

    fn serve(&self, document: String) {
        *self.document.lock().unwrap() = document;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A server with the failed-authentication limit off (the tables fail on purpose).
async fn server(tweak: impl FnOnce(&mut chorus_server::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.auth_failures_per_sec = 0;
        tweak(c);
    })
    .await
}

#[track_caller]
fn assert_accepted(status: StatusCode, case: &str) {
    assert_eq!(status, StatusCode::OK, "{case} should be accepted");
}

async fn me(s: &TestServer, token: &str) -> StatusCode {
    s.get("/api/v1/me", token).await.status
}

#[tokio::test]
async fn claims_are_checked_as_configured() {
    let s = server(|c| {
        c.jwt_secret = Some(SECRET.to_owned());
        c.jwt_issuer = Some(ISSUER.to_owned());
        c.jwt_audience = Some(AUDIENCE.to_owned());
    })
    .await;
    s.create_user("alice").await;
    let t = now();
    let good = json!({"sub": "alice", "exp": t + 600, "iss": ISSUER, "aud": AUDIENCE});
    let with = |changes: Value| {
        let mut claims = good.clone();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        hs256(claims)
    };
    let table = [
        ("all claims right", with(json!({})), true),
        (
            "aud among several",
            with(json!({"aud": ["other", AUDIENCE]})),
            true,
        ),
        ("nbf in the past", with(json!({"nbf": t - 10})), true),
        ("no exp", with(json!({"exp": null})), false),
        ("expired", with(json!({"exp": t - 5})), false),
        ("nbf in the future", with(json!({"nbf": t + 3600})), false),
        (
            "wrong iss",
            with(json!({"iss": "https://evil.test/"})),
            false,
        ),
        ("no iss", with(json!({"iss": null})), false),
        ("wrong aud", with(json!({"aud": "someone-else"})), false),
        ("no aud", with(json!({"aud": null})), false),
        ("no sub", with(json!({"sub": null})), false),
        (
            "another secret",
            sign(
                Algorithm::HS256,
                None,
                &EncodingKey::from_secret(b"another-secret"),
                &good,
            ),
            false,
        ),
        // No public key is configured: an ES256 token is refused, not checked with the secret.
        (
            "ES256 without a key",
            KeyPair::ec().token(None, &good),
            false,
        ),
    ];
    for (case, token, accepted) in table {
        let resp = s.get("/api/v1/me", &token).await;
        if accepted {
            assert_accepted(resp.status, case);
        } else {
            let resp = resp.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
            assert!(
                resp.text.contains("JWT"),
                "{case}: unexpected refusal {}",
                resp.text
            );
            assert_eq!(
                s.refused_upgrade(Some(&token)).await,
                StatusCode::UNAUTHORIZED,
                "{case}"
            );
        }
    }
}

#[tokio::test]
async fn exp_may_be_made_optional() {
    let s = server(|c| {
        c.jwt_secret = Some(SECRET.to_owned());
        c.jwt_require_exp = false;
    })
    .await;
    let alice = s.create_user("alice").await;
    let lasting = hs256(json!({"sub": "alice"}));
    assert_accepted(me(&s, &lasting).await, "no exp with the switch off");
    let mut ws = s.connect(&lasting).await;
    assert_eq!(ws.user_id(), alice.id);
    ws.ping().await;
    // An `exp` that is there is still honoured.
    assert_eq!(
        me(&s, &hs256(expiring("alice", -5))).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn rs256_and_es256_with_a_pem_key() {
    let rsa = KeyPair::rsa();
    let (_dir, rsa_file) = file_with(&rsa.public_pem);
    let s = server(|c| c.jwt_public_key_file = Some(rsa_file)).await;
    let alice = s.create_user("alice").await;
    let claims = expiring("alice", 600);
    assert_accepted(me(&s, &rsa.token(None, &claims)).await, "RS256");
    let ws = s.connect(&rsa.token(None, &claims)).await;
    assert_eq!(ws.user_id(), alice.id);
    // Another key, another algorithm, and the public key used as an HS256 secret
    // (algorithm confusion) are all refused.
    let refused = [
        KeyPair::ec().token(None, &claims),
        sign(
            Algorithm::HS256,
            None,
            &EncodingKey::from_secret(rsa.public_pem.as_bytes()),
            &claims,
        ),
    ];
    for token in refused {
        assert_eq!(me(&s, &token).await, StatusCode::UNAUTHORIZED);
    }

    let ec = KeyPair::ec();
    let (_dir, ec_file) = file_with(&ec.public_pem);
    let s = server(|c| c.jwt_public_key_file = Some(ec_file)).await;
    s.create_user("alice").await;
    assert_accepted(me(&s, &ec.token(None, &claims)).await, "ES256");
    assert_eq!(
        me(&s, &KeyPair::ec().token(None, &claims)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        me(&s, &rsa.token(None, &claims)).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_jwks_file_selects_keys_by_kid() {
    let rsa = KeyPair::rsa();
    let ec = KeyPair::ec();
    let (_dir, path) = file_with(&jwks(&[rsa.jwk("r1"), ec.jwk("e1")]));
    let s = server(|c| c.jwt_jwks = Some(path.display().to_string())).await;
    s.create_user("alice").await;
    let claims = expiring("alice", 600);
    assert_accepted(me(&s, &rsa.token(Some("r1"), &claims)).await, "RS256 r1");
    assert_accepted(me(&s, &ec.token(Some("e1"), &claims)).await, "ES256 e1");
    assert_accepted(me(&s, &ec.token(None, &claims)).await, "ES256 without kid");
    for token in [
        ec.token(Some("r1"), &claims),   // the kid of a key of another type
        ec.token(Some("nope"), &claims), // an unknown kid
        KeyPair::ec().token(Some("e1"), &claims), // the right kid, another key
    ] {
        assert_eq!(me(&s, &token).await, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn a_jwks_url_follows_key_rotation() {
    let old = KeyPair::ec();
    let new = KeyPair::ec();
    let rsa = KeyPair::rsa();
    let idp = JwksServer::start(jwks(&[old.jwk("2024"), rsa.jwk("rsa")])).await;
    let s = server(|c| c.jwt_jwks = Some(idp.url.clone())).await;
    s.create_user("alice").await;
    let claims = expiring("alice", 600);
    assert_accepted(me(&s, &old.token(Some("2024"), &claims)).await, "old kid");
    assert_accepted(me(&s, &rsa.token(Some("rsa"), &claims)).await, "RS256 kid");
    let fetched = idp.fetches();
    assert_eq!(fetched, 1, "read once at start");

    // The provider rotates: a token with the new kid makes the server read the set again.
    idp.serve(jwks(&[new.jwk("2025")]));
    assert_accepted(me(&s, &new.token(Some("2025"), &claims)).await, "new kid");
    assert_eq!(idp.fetches(), 2);
    assert_eq!(
        me(&s, &old.token(Some("2024"), &claims)).await,
        StatusCode::UNAUTHORIZED,
        "the retired key is gone"
    );
    // Unknown kids cause at most one read per 30 s: the retired kid above made none.
    assert_eq!(
        me(&s, &new.token(Some("made-up"), &claims)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(idp.fetches(), 2);
}

#[tokio::test]
async fn a_socket_closes_with_3502_when_its_jwt_expires() {
    let s = server(|c| c.jwt_secret = Some(SECRET.to_owned())).await;
    s.create_user("alice").await;
    let mut ws = s.connect(&hs256(expiring("alice", 3))).await;
    ws.ping().await;
    assert_eq!(ws.expect_close().await, Some(3502));
}

#[tokio::test]
async fn refresh_moves_a_sockets_expiry() {
    let s = server(|c| c.jwt_secret = Some(SECRET.to_owned())).await;
    let alice = s.create_user("alice").await;
    s.create_user("bob").await;
    let carol = s.create_user("carol").await;
    let short = hs256(expiring("alice", 4));
    let mut refreshed = s.connect(&short).await;
    let mut witness = s.connect(&short).await;

    // Refused refreshes leave the expiry where it was.
    for (case, token) in [
        ("another user's token", hs256(expiring("bob", 600))),
        ("a bad token", "not-a-token".to_owned()),
        ("an expired token", hs256(expiring("alice", -5))),
        ("another user's API token", carol.token),
    ] {
        let reply = refreshed
            .request(json!({"op": "refresh", "token": token}))
            .await;
        assert_eq!(reply["op"], "error", "{case}: {reply}");
        assert_eq!(reply["code"], "unauthorized", "{case}: {reply}");
    }
    let reply = refreshed
        .request(json!({"op": "refresh", "token": hs256(expiring("alice", 600))}))
        .await;
    assert_eq!(reply["op"], "ack", "{reply}");

    // Once the socket that kept the old token is closed, the old expiry has passed...
    assert_eq!(witness.expect_close().await, Some(3502));
    // ...and the refreshed one still answers.
    refreshed.ping().await;
    assert_eq!(refreshed.user_id(), alice.id);
}

#[tokio::test]
async fn provisioning_creates_unknown_subjects_when_on() {
    let claims = json!({
        "sub": "auth0|64f0c2a9e1b7",
        "exp": now() + 600,
        "preferred_username": "Dana",
        "name": "Dana Scully",
        "chorus_kind": "agent",
    });
    let token = hs256(claims.clone());

    let off = server(|c| c.jwt_secret = Some(SECRET.to_owned())).await;
    off.get("/api/v1/me", &token)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    let s = server(|c| {
        c.jwt_secret = Some(SECRET.to_owned());
        c.jwt_provision_users = true;
    })
    .await;
    let me = s
        .get("/api/v1/me", &token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(me.body["display_name"], "Dana Scully");
    assert_eq!(me.body["kind"], "agent");
    assert_eq!(me.body["is_admin"], false);
    let name = me.body["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("auth0_64f0c2a9e1b7-"), "{name}");

    // The next token of the same subject is the same user, whatever else it says.
    let again = hs256(json!({"sub": "auth0|64f0c2a9e1b7", "exp": now() + 600}));
    let me_again = s
        .get("/api/v1/me", &again)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(me_again.body["id"], me.body["id"]);
    let mut ws = s.connect(&again).await;
    assert_eq!(json!(ws.user_id()), me.body["id"]);
    ws.ping().await;

    // Another subject that folds to the same characters is another user.
    let other = hs256(json!({"sub": "auth0_64f0c2a9e1b7", "exp": now() + 600}));
    let other = s
        .get("/api/v1/me", &other)
        .await
        .expect_status(StatusCode::OK);
    assert_ne!(other.body["id"], me.body["id"]);
    assert_eq!(other.body["kind"], "human");

    // A numeric subject is a user id, and an unknown kind is refused: nobody created.
    for claims in [
        json!({"sub": "987654", "exp": now() + 600}),
        json!({"sub": "someone", "exp": now() + 600, "chorus_kind": "robot"}),
    ] {
        s.get("/api/v1/me", &hs256(claims))
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
}

/// A provisioned user's display name comes from the identity provider, which may put
/// anything in `name`: control characters (a NUL that PostgreSQL would refuse, line
/// breaks) become spaces rather than keep the user from signing in.
#[tokio::test]
async fn provisioned_display_names_lose_control_characters() {
    let s = server(|c| {
        c.jwt_secret = Some(SECRET.to_owned());
        c.jwt_provision_users = true;
    })
    .await;
    for (sub, name, shown) in [
        ("idp|1", "Dana\u{0}Scully", Some("Dana Scully")),
        ("idp|2", "\tFox\r\nMulder\u{85}", Some("Fox Mulder")),
        // Nothing but control characters: the user's name, as with no `name` at all.
        ("idp|3", "\u{0}\u{1b}", None),
    ] {
        let token = hs256(json!({"sub": sub, "exp": now() + 600, "name": name}));
        let me = s
            .get("/api/v1/me", &token)
            .await
            .expect_status(StatusCode::OK);
        let shown = shown.unwrap_or_else(|| me.body["name"].as_str().unwrap());
        assert_eq!(me.body["display_name"], shown, "{name:?}");
    }
}

/// `sub` is looked up as a user id or name: one with a control character (a NUL, which
/// PostgreSQL cannot hold in text, was a 500 there) is an invalid token, refused before
/// any lookup, and nobody is provisioned from it.
#[tokio::test]
async fn a_subject_with_control_characters_is_an_invalid_jwt() {
    let s = server(|c| {
        c.jwt_secret = Some(SECRET.to_owned());
        c.jwt_provision_users = true;
    })
    .await;
    for sub in ["dana\u{0}", "\u{0}", "1\u{0}", "idp|\u{1b}x", "dana\n"] {
        let token = hs256(expiring(sub, 600));
        let resp = s
            .get("/api/v1/me", &token)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
        let message = resp.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("sub"), "{sub:?}: {message}");
    }
    let users = s.get("/api/v1/users", ADMIN_TOKEN).await;
    let names: Vec<&str> = users
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin"], "nobody provisioned");
    // The server still serves, and a fine subject is provisioned.
    s.get("/api/v1/me", &hs256(expiring("dana", 600)))
        .await
        .expect_status(StatusCode::OK);
}

/// The server judges `exp` on its own clock (`Config::clock`, which tests may set): a
/// token with ten minutes left by the system's time has expired for a server whose
/// clock reads an hour later, and one minted for that hour is accepted.
#[tokio::test]
async fn exp_is_judged_on_the_servers_clock() {
    let an_hour_ahead = (now() + 3600) * 1000;
    let s = server(|c| {
        c.jwt_secret = Some(SECRET.to_owned());
        c.clock = chorus_server::Clock::following_tokio(an_hour_ahead);
    })
    .await;
    s.create_user("alice").await;
    let by_the_system = hs256(expiring("alice", 600));
    s.get("/api/v1/me", &by_the_system)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let by_the_server = hs256(expiring("alice", 3600 + 600));
    s.get("/api/v1/me", &by_the_server)
        .await
        .expect_status(StatusCode::OK);
}

/// A server's configuration with a throwaway data dir, for starts that must be refused.
fn refused_start_config(dir: &tempfile::TempDir) -> chorus_server::Config {
    chorus_server::Config {
        data_dir: dir.path().to_path_buf(),
        ..chorus_server::Config::default()
    }
}

/// Starts a server with `config`; the start must be refused. Returns the reason.
async fn refused_start(config: chorus_server::Config) -> String {
    match chorus_server::build(config).await {
        Ok(_) => panic!("the start was not refused"),
        Err(err) => format!("{err:#}"),
    }
}

/// A JWT never signs in a server admin — named by user name or by id, the bootstrap
/// `admin` or another — over HTTP, `/mcp`, the WebSocket (header or `?token=`) or a
/// socket's `refresh`, unless `jwt_admins` is on: an identity provider's subjects
/// (numeric ids, user names) must not turn into the server's admin by coincidence.
#[tokio::test]
async fn a_jwt_signs_in_no_server_admin_unless_allowed() {
    let s = server(|c| c.jwt_secret = Some(SECRET.to_owned())).await;
    let admin_id = s.admin_id().await;
    let ops = s
        .post(
            "/api/v1/users",
            ADMIN_TOKEN,
            json!({"name": "ops", "admin": true}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    let ops_id = ops.body["user"]["id"].as_i64().unwrap();
    let alice = s.create_user("alice").await;

    let admins = [
        "admin".to_owned(),
        admin_id.to_string(),
        "ops".to_owned(),
        ops_id.to_string(),
    ];
    for sub in &admins {
        let token = hs256(expiring(sub, 600));
        for path in ["/api/v1/users", "/api/v1/me"] {
            let resp = s
                .get(path, &token)
                .await
                .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
            assert!(
                resp.text.contains("JWT") && resp.text.contains("jwt_admins"),
                "sub {sub}, {path}: {}",
                resp.text
            );
        }
        s.post("/mcp", &token, json!({}))
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(
            s.refused_upgrade(Some(&token)).await,
            StatusCode::UNAUTHORIZED,
            "sub {sub}: upgrade with the header"
        );
        let query = format!("{}?token={token}", s.ws_url());
        match tokio_tungstenite::connect_async(query).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 401, "sub {sub}: ?token=")
            }
            Err(other) => panic!("sub {sub}: ?token=: {other}"),
            Ok(_) => panic!("sub {sub}: ?token= accepted"),
        }
    }
    // A socket of the admin (opened with the admin token) cannot be refreshed with one.
    let mut ws = s.connect(ADMIN_TOKEN).await;
    let reply = ws
        .request(json!({"op": "refresh", "token": hs256(expiring("admin", 600))}))
        .await;
    assert_eq!(reply["op"], "error", "{reply}");
    assert_eq!(reply["code"], "unauthorized", "{reply}");
    // Users who are not server admins sign in as before.
    let me = s
        .get("/api/v1/me", &hs256(expiring("alice", 600)))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(me.body["id"], alice.id);

    // The operator's opt-in: the same tokens are the admins.
    let s = server(|c| {
        c.jwt_secret = Some(SECRET.to_owned());
        c.jwt_admins = true;
    })
    .await;
    let admin_id = s.admin_id().await;
    for sub in ["admin".to_owned(), admin_id.to_string()] {
        let token = hs256(expiring(&sub, 600));
        s.get("/api/v1/users", &token)
            .await
            .expect_status(StatusCode::OK);
        let mut ws = s.connect(&token).await;
        assert_eq!(ws.user_id(), admin_id, "sub {sub}");
        ws.ping().await;
    }
}

/// An HS256 secret shorter than 32 bytes can be found from one token by trying
/// secrets offline: such a `jwt_secret` stops the start.
#[tokio::test]
async fn a_short_hs256_secret_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    for short in ["", "secret", &"s".repeat(31)] {
        let text = refused_start(chorus_server::Config {
            jwt_secret: Some(short.to_owned()),
            ..refused_start_config(&dir)
        })
        .await;
        assert!(
            text.contains("jwt_secret") && text.contains("32 bytes"),
            "{} bytes: {text}",
            short.len()
        );
    }
    let s = server(|c| c.jwt_secret = Some("s".repeat(32))).await;
    s.create_user("alice").await;
    let token = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret("s".repeat(32).as_bytes()),
        &expiring("alice", 600),
    );
    assert_accepted(me(&s, &token).await, "a 32-byte secret");
}

/// The keys that say who a token's bearer is must not travel in the clear: a JWKS URL
/// is `https://`, or `http://` to a loopback address only; anything else stops the start.
#[tokio::test]
async fn a_plain_http_jwks_url_stops_the_start_unless_loopback() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "http://idp.example.test/.well-known/jwks.json",
        "http://10.0.0.7/.well-known/jwks.json",
        "http://127.0.0.1.nip.io/.well-known/jwks.json",
        "ftp://idp.example.test/jwks.json",
    ] {
        let text = refused_start(chorus_server::Config {
            jwt_jwks: Some(url.to_owned()),
            ..refused_start_config(&dir)
        })
        .await;
        assert!(
            text.contains("jwt_jwks") && text.contains("https://"),
            "{url}: {text}"
        );
    }
}

/// The JWKS is read where it was configured: a redirect is not followed (it could lead
/// anywhere, plain `http://` included), so a set behind one is never read.
#[tokio::test]
async fn a_jwks_url_is_not_followed_through_a_redirect() {
    let ec = KeyPair::ec();
    let idp = JwksServer::start(jwks(&[ec.jwk("k")])).await;
    let redirect = JwksServer::redirecting(idp.url.clone()).await;
    let s = server(|c| c.jwt_jwks = Some(redirect.url.clone())).await;
    s.create_user("alice").await;
    let token = ec.token(Some("k"), &expiring("alice", 600));
    s.get("/api/v1/me", &token)
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(redirect.fetches() >= 1);
    assert_eq!(idp.fetches(), 0, "the redirect was followed");
}

/// A JWT (five minutes left) could mint an API token that never expires, outliving
/// the identity provider's say: it mints tokens that expire no later than itself.
#[tokio::test]
async fn a_jwt_mints_no_token_that_outlives_it() {
    let s = server(|c| c.jwt_secret = Some(SECRET.to_owned())).await;
    let alice = s.create_user("alice").await;
    let jwt = hs256(expiring("alice", 300));
    let tokens = format!("/api/v1/users/{}/tokens", alice.id);
    for body in [
        json!({"name": "forever"}),
        json!({"name": "longer", "expires_in": 3600}),
    ] {
        let refused = s
            .post(&tokens, &jwt, body)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
        assert!(refused.text.contains("expire no later"), "{}", refused.text);
    }
    let made = s
        .post(&tokens, &jwt, json!({"name": "short", "expires_in": 60}))
        .await
        .expect_status(StatusCode::CREATED);
    assert!(made.body["expires_at"].is_string(), "{}", made.text);
    // A lasting credential still mints a lasting token.
    s.post(&tokens, &alice.token, json!({"name": "laptop"}))
        .await
        .expect_status(StatusCode::CREATED);
}
