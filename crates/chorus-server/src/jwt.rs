//! JWTs as identity providers issue them: HS256 with the configured secret, RS256 and
//! ES256 with a PEM public key or a JWKS (a file or a URL, cached and re-read), and the
//! user a verified token stands for (created on first use with `jwt_provision_users`).
//! The token's `exp` becomes the connection's expiry; nothing here knows sockets.
//!
//! Every JWT (HTTP, `/mcp`, the WebSocket upgrade, a socket's `refresh`) is judged by
//! [`JwtVerifier::authenticate`], which refuses one naming a server admin unless
//! `jwt_admins` is on: a provider's subject (`1`, `admin`) must not be the server's
//! admin by coincidence.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use chorus_chat::Chat;
use chorus_chat::error::ChatError;
use chorus_chat::model::{User, UserKind, check_text_field, valid_user_name};
use chorus_chat::namespaces::credential_roles;
use chorus_chat::service::CreateUser;
use chorus_proto::ErrorCode;
use chorus_realtime::{Clock, SessionAuth};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::time::Instant;

use crate::auth::Principal;
use crate::config::Config;
use crate::error::ApiError;
use crate::webhooks::without_credentials;

/// How long a JWKS is used before it is read again.
const JWKS_MAX_AGE: Duration = Duration::from_secs(10 * 60);
/// Least time between two reads of a JWKS caused by an unknown `kid` (a stream of
/// tokens with made-up `kid`s must not turn into a stream of fetches), and between
/// two attempts after a failed read.
const JWKS_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// Largest JWKS document read.
const JWKS_MAX_BYTES: usize = 1024 * 1024;
/// Fewest bytes an HS256 secret may have (the hash's size, RFC 7518 §3.2): one token
/// observed is enough to try secrets offline, so a shorter one may be found.
pub const MIN_SECRET_BYTES: usize = 32;
/// How far in the future `nbf` may be and still be honoured now: identity providers'
/// clocks are a little off. `exp` gets no such leeway: it is the socket's expiry too.
const NBF_LEEWAY: Duration = Duration::from_secs(30);

/// Why a JWT was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The token is not valid: answered with 401.
    #[error("invalid JWT: {0}")]
    Invalid(String),
    /// The keys to check it could not be read (JWKS unreachable): answered with 503.
    #[error("JWT keys unavailable: {0}")]
    KeysUnavailable(String),
}

impl From<JwtError> for ApiError {
    fn from(err: JwtError) -> Self {
        match err {
            JwtError::Invalid(_) => ApiError::unauthorized(err.to_string()),
            JwtError::KeysUnavailable(_) => ApiError::new(ErrorCode::Unavailable, err.to_string()),
        }
    }
}

fn invalid(reason: impl std::fmt::Display) -> JwtError {
    JwtError::Invalid(reason.to_string())
}

/// The claims of a verified token that Chorus reads.
#[derive(Debug, Clone, Deserialize)]
pub struct JwtClaims {
    /// The user: an id or a name (or, with provisioning, a new user's subject).
    pub sub: String,
    /// When it stops being valid; `None` only when `jwt_require_exp` is off.
    #[serde(skip)]
    pub expires_at: Option<SystemTime>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    /// Provisioning: the new user's name.
    #[serde(default)]
    pub preferred_username: Option<String>,
    /// Provisioning: the new user's display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Provisioning: `human` or `agent`.
    #[serde(default)]
    pub chorus_kind: Option<String>,
    /// The roles the token gives its connection (the configured `jwt_roles_claim`):
    /// checked names, none when the claim is absent.
    #[serde(skip)]
    pub roles: Vec<String>,
    /// The other claims, the roles claim among them.
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

/// Checks JWTs against the configured keys and claims.
pub struct JwtVerifier {
    secret: Option<DecodingKey>,
    /// The PEM key and the one algorithm it verifies.
    public_key: Option<(Algorithm, DecodingKey)>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
    audience: Option<String>,
    require_exp: bool,
    provision_users: bool,
    /// Whether a token may sign in a server admin (`jwt_admins`).
    admins: bool,
    /// The claim holding the token's roles.
    roles_claim: String,
    /// What `exp` and `nbf` are judged against, and the JWKS's age measured on.
    clock: Clock,
}

impl JwtVerifier {
    /// The verifier the configuration asks for; `None` when no JWT key is configured.
    /// Reads the PEM key and a JWKS file now (a bad one fails the start); a JWKS URL is
    /// fetched now if it answers, else on first use. An HS256 secret shorter than
    /// [`MIN_SECRET_BYTES`], and a JWKS URL that is neither `https://` nor to a loopback
    /// host, fail the start.
    pub async fn from_config(config: &Config) -> anyhow::Result<Option<Self>> {
        let secret = match config.jwt_secret.as_deref() {
            Some(secret) if secret.len() < MIN_SECRET_BYTES => bail!(
                "jwt_secret (CHORUS_JWT_SECRET) is {} bytes: an HS256 secret must be at least \
                 {MIN_SECRET_BYTES} bytes, or one token is enough to find it offline \
                 (e.g. `openssl rand -hex 32`)",
                secret.len()
            ),
            Some(secret) => Some(DecodingKey::from_secret(secret.as_bytes())),
            None => None,
        };
        let public_key = match &config.jwt_public_key_file {
            Some(path) => Some(read_pem_key(path).await?),
            None => None,
        };
        let jwks = match config.jwt_jwks.as_deref() {
            Some(source) => Some(Jwks::new(source, config).await?),
            None => None,
        };
        if secret.is_none() && public_key.is_none() && jwks.is_none() {
            return Ok(None);
        }
        if let Some(warning) = audience_warning(config) {
            tracing::warn!("{warning}");
        }
        Ok(Some(Self {
            secret,
            public_key,
            jwks,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            require_exp: config.jwt_require_exp,
            provision_users: config.jwt_provision_users,
            admins: config.jwt_admins,
            roles_claim: config.jwt_roles_claim.clone(),
            clock: config.clock,
        }))
    }

    /// The user `token` stands for, with the token's expiry. A server admin only with
    /// `jwt_admins`: every JWT, whatever carries it, comes through here.
    pub async fn authenticate(&self, chat: &Chat, token: &str) -> Result<Principal, ApiError> {
        let claims = self.verify(token).await?;
        let session = SessionAuth {
            credential: None,
            expires_at: claims.expires_at,
            roles: (!claims.roles.is_empty()).then(|| claims.roles.clone().into()),
        };
        let user = match known_user(chat, &claims.sub).await? {
            Some(user) => user,
            None if self.provision_users => provision(chat, &claims).await?,
            None => return Err(ApiError::unauthorized("the JWT names no known user")),
        };
        if user.is_admin && !self.admins {
            return Err(ApiError::unauthorized(
                "the JWT names a server admin, whom a JWT signs in only with jwt_admins = true \
                 (CHORUS_JWT_ADMINS); use the admin's API token or the admin token",
            ));
        }
        Ok(Principal { user, session })
    }

    /// The claims of `token` if its signature, `exp`, `nbf`, `iss` and `aud` are good.
    pub async fn verify(&self, token: &str) -> Result<JwtClaims, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        let key = match header.alg {
            Algorithm::HS256 => self
                .secret
                .clone()
                .ok_or_else(|| invalid("HS256 is not configured"))?,
            alg @ (Algorithm::RS256 | Algorithm::ES256) => {
                self.public_key_for(alg, header.kid.as_deref()).await?
            }
            other => return Err(invalid(format!("unsupported algorithm {other:?}"))),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = 0;
        // Both judged below, against the configured clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let mut required = vec!["sub"];
        if self.require_exp {
            required.push("exp");
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let mut claims = jsonwebtoken::decode::<JwtClaims>(token, &key, &validation)
            .map_err(invalid)?
            .claims;
        // Looked up next, by id or name: no control character (PostgreSQL stores no NUL
        // in text, and a user's name has none), else the lookup fails as a 500.
        check_text_field("sub", &claims.sub).map_err(invalid)?;
        let now = self.clock.system_time();
        if let Some(nbf) = claims.nbf
            && unix_time(nbf).is_none_or(|nbf| nbf > now + NBF_LEEWAY)
        {
            return Err(invalid("not valid yet (nbf)"));
        }
        claims.expires_at = match claims.exp {
            Some(exp) => Some(unix_time(exp).ok_or_else(|| invalid("exp out of range"))?),
            None => None,
        };
        if claims.expires_at.is_some_and(|exp| exp <= now) {
            return Err(invalid("expired (exp)"));
        }
        claims.roles = match claims.rest.remove(&self.roles_claim) {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(value) => serde_json::from_value::<Vec<String>>(value)
                .map_err(|_| "not an array of strings".to_owned())
                .and_then(credential_roles)
                .map_err(|e| invalid(format!("claim {:?}: {e}", self.roles_claim)))?,
        };
        Ok(claims)
    }

    async fn public_key_for(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<DecodingKey, JwtError> {
        let pem = self
            .public_key
            .as_ref()
            .filter(|(key_alg, _)| *key_alg == alg)
            .map(|(_, key)| key.clone());
        // A `kid` names a JWKS key; without one, the PEM key (if it fits) comes first.
        if let Some(jwks) = &self.jwks
            && (kid.is_some() || pem.is_none())
        {
            return jwks.key(alg, kid).await;
        }
        pem.ok_or_else(|| invalid(format!("{alg:?} is not configured")))
    }
}

/// The warning for a configuration that verifies JWTs with a public key (a PEM key or a
/// JWKS) but checks no `aud`. A public key is often an identity provider's, which signs
/// tokens for every application it serves: without `aud` (and `iss`) checked, any of
/// them is taken here. An HS256 secret is the application's own: no warning.
fn audience_warning(config: &Config) -> Option<&'static str> {
    let public = config.jwt_public_key_file.is_some() || config.jwt_jwks.is_some();
    (public && config.jwt_audience.is_none()).then_some(
        "JWTs are verified with a public key but jwt_audience is not set: a token the same \
         key signed for another application is accepted (set jwt_audience, and jwt_issuer)",
    )
}

/// The user `sub` names: a user id, a user name, or the name a provisioned user got
/// from that subject ([`subject_name`]).
async fn known_user(chat: &Chat, sub: &str) -> Result<Option<User>, ChatError> {
    if let Some(user) = chat.user_by_subject(sub).await? {
        return Ok(Some(user));
    }
    let name = subject_name(sub);
    if name == sub || sub.parse::<i64>().is_ok() {
        return Ok(None);
    }
    // Through the service, which refuses deactivated users like any other lookup.
    chat.user_by_subject(&name).await
}

/// Creates the user of a token whose subject names nobody. Its name comes from `sub`
/// (not `preferred_username`, which providers let change and do not keep unique: the
/// next token must find the same user, and no token may claim another's account).
async fn provision(chat: &Chat, claims: &JwtClaims) -> Result<User, ApiError> {
    if claims.sub.parse::<i64>().is_ok() {
        // A numeric subject is a user id; creating a user would not give it that id.
        return Err(ApiError::unauthorized("the JWT names no known user id"));
    }
    let kind = match claims.chorus_kind.as_deref() {
        None | Some("human") => UserKind::Human,
        Some("agent") => UserKind::Agent,
        Some(_) => {
            return Err(ApiError::unauthorized("chorus_kind must be human or agent"));
        }
    };
    let display_name = claims
        .name
        .as_deref()
        .or(claims.preferred_username.as_deref());
    provision_user(chat, subject_name(&claims.sub), display_name, kind, "a JWT").await
}

/// Creates the user named `name` (a name from [`subject_name`]), or finds it when
/// another request (or node) created it first. `from` says what introduced it, in logs.
pub(crate) async fn provision_user(
    chat: &Chat,
    name: String,
    display_name: Option<&str>,
    kind: UserKind,
    from: &str,
) -> Result<User, ApiError> {
    let display_name = display_name.map(shown_name);
    let created = chat
        .create_user_unchecked(CreateUser {
            name: name.clone(),
            display_name,
            kind,
            webhook_url: None,
            webhook_secret: None,
            admin: false,
        })
        .await;
    match created {
        Ok(account) => {
            tracing::info!(user = account.user.id.0, %name, from, "user provisioned");
            Ok(account.user)
        }
        // Another request (or node) provisioned it first.
        Err(ChatError::Conflict(_)) => chat
            .user_by_subject(&name)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the user could not be created")),
        Err(err) => Err(err.into()),
    }
}

/// The user name of a subject: the subject itself when it is a valid user name, else
/// its characters folded to the name rules (`[a-z0-9_.-]`, at most 32 bytes) and a
/// hash of the whole subject, so two subjects never share a name.
pub(crate) fn subject_name(sub: &str) -> String {
    use sha2::{Digest, Sha256};
    if valid_user_name(sub) {
        return sub.to_owned();
    }
    let mut base: String = sub
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    base.truncate(21); // ASCII only by now; 21 + '-' + 10 = 32
    if base.is_empty() {
        base.push('u'); // never a bare `-digits`, which would read as a user id
    }
    let digest = hex::encode(Sha256::digest(sub.as_bytes()));
    format!("{base}-{}", &digest[..10])
}

/// A display name as an identity provider (or the application) gave it, made one the
/// server takes: each run of control characters (which a display name may not hold)
/// becomes a space — the provider chose the name, and refusing it would keep the user
/// from signing in — then trimmed and cut to 80 bytes. Blank: the user's name is shown.
fn shown_name(given: &str) -> String {
    let mut name = String::with_capacity(given.len());
    let mut in_run = false;
    for c in given.chars() {
        if c.is_control() {
            if !in_run {
                name.push(' ');
            }
            in_run = true;
        } else {
            name.push(c);
            in_run = false;
        }
    }
    truncate(name.trim(), 80).to_owned()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Seconds since the epoch as a time; `None` for negative or absurd values.
fn unix_time(secs: f64) -> Option<SystemTime> {
    let since = Duration::try_from_secs_f64(secs).ok()?;
    UNIX_EPOCH.checked_add(since)
}

/// An RSA (→ RS256) or P-256 (→ ES256) public key from a PEM file: `PUBLIC KEY`
/// (SubjectPublicKeyInfo) or `RSA PUBLIC KEY` (PKCS#1).
async fn read_pem_key(path: &Path) -> anyhow::Result<(Algorithm, DecodingKey)> {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    use p256::pkcs8::DecodePublicKey as _;
    use rsa::pkcs1::DecodeRsaPublicKey as _;
    use rsa::traits::PublicKeyParts as _;

    let pem = tokio::fs::read_to_string(path)
        .await
        .with_context(|| format!("reading jwt_public_key_file {}", path.display()))?;
    let rsa = rsa::RsaPublicKey::from_public_key_pem(&pem)
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(&pem));
    if let Ok(key) = rsa {
        let key =
            DecodingKey::from_rsa_raw_components(&key.n().to_bytes_be(), &key.e().to_bytes_be());
        return Ok((Algorithm::RS256, key));
    }
    if let Ok(key) = p256::PublicKey::from_public_key_pem(&pem) {
        let point = key.to_encoded_point(false);
        return Ok((Algorithm::ES256, DecodingKey::from_ec_der(point.as_bytes())));
    }
    bail!(
        "jwt_public_key_file {} holds no RSA or P-256 public key in PEM",
        path.display()
    )
}

/// A JWKS and where it comes from. The keys are a snapshot behind a std lock (read per
/// token, replaced whole, never held across an await); reads of the source go one at a
/// time through `fetch`.
struct Jwks {
    source: JwksSource,
    clock: Clock,
    keys: RwLock<Arc<KeySet>>,
    fetch: tokio::sync::Mutex<FetchLog>,
}

enum JwksSource {
    File(PathBuf),
    Url(reqwest::Client, reqwest::Url),
}

#[derive(Default)]
struct KeySet {
    keys: Vec<JwkKey>,
    /// When the source was last read successfully; `None`: never.
    fetched_at: Option<Instant>,
}

struct JwkKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct FetchLog {
    /// The last read of the source, successful or not.
    attempted_at: Option<Instant>,
    /// The last read caused by an unknown `kid`.
    unknown_kid_at: Option<Instant>,
}

impl Jwks {
    /// A JWKS URL (anything with `://`) must be `https://`, or `http://` to a loopback
    /// host. It is fetched as the server's other outgoing requests are
    /// ([`crate::webhooks::client_builder`]: no proxy from the environment, no redirect
    /// followed, `webhook_ca_file` trusted besides the built-in roots), but to any
    /// address: an identity provider on a private network is the operator's choice.
    async fn new(source: &str, config: &Config) -> anyhow::Result<Self> {
        let source = if source.contains("://") {
            let url = reqwest::Url::parse(source)
                // Not shown: it may carry a password.
                .context("parsing the jwt_jwks URL")?;
            match url.scheme() {
                "https" => {}
                "http" if is_loopback(&url) => {}
                _ => bail!(
                    "jwt_jwks {}: a JWKS URL must be https:// (http:// only to a loopback \
                     host such as 127.0.0.1): the keys that say who a token's bearer is must \
                     not travel in the clear",
                    without_credentials(&url)
                ),
            }
            let client = crate::webhooks::client_builder(config.webhook_ca_file.as_deref())?
                .timeout(Duration::from_secs(10))
                .user_agent(concat!("chorus-jwks/", env!("CARGO_PKG_VERSION")))
                .build()
                .context("building the JWKS HTTP client")?;
            JwksSource::Url(client, url)
        } else {
            JwksSource::File(PathBuf::from(source))
        };
        let jwks = Self {
            source,
            clock: config.clock,
            keys: RwLock::default(),
            fetch: tokio::sync::Mutex::default(),
        };
        let first = jwks.refresh(Refresh::Stale).await;
        match (&jwks.source, first) {
            (_, Ok(())) => {}
            (JwksSource::File(path), Err(err)) => {
                bail!("reading jwt_jwks {}: {err}", path.display())
            }
            (JwksSource::Url(_, url), Err(err)) => {
                let url = without_credentials(url);
                tracing::warn!(%url, cause = %err, "JWKS not fetched at start; retrying on use");
            }
        }
        Ok(jwks)
    }

    fn snapshot(&self) -> Arc<KeySet> {
        // A poisoned lock still holds a whole snapshot: it is only ever replaced.
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The key for a token signed with `alg` naming `kid`, re-reading the set when it
    /// is old or does not know the `kid`.
    async fn key(&self, alg: Algorithm, kid: Option<&str>) -> Result<DecodingKey, JwtError> {
        let mut set = self.snapshot();
        let now = self.clock.instant();
        if set
            .fetched_at
            .is_none_or(|at| now.saturating_duration_since(at) >= JWKS_MAX_AGE)
        {
            if let Err(err) = self.refresh(Refresh::Stale).await {
                tracing::warn!(cause = %err, "JWKS refresh failed; using the keys held");
            }
            set = self.snapshot();
        }
        if set.fetched_at.is_none() {
            return Err(JwtError::KeysUnavailable("the JWKS was never read".into()));
        }
        if let Some(key) = set.find(alg, kid) {
            return Ok(key);
        }
        if kid.is_some() {
            match self.refresh(Refresh::UnknownKid).await {
                Ok(()) => set = self.snapshot(),
                Err(err) => tracing::warn!(cause = %err, "JWKS refresh failed"),
            }
            if let Some(key) = set.find(alg, kid) {
                return Ok(key);
            }
        }
        Err(invalid(format!(
            "no {alg:?} key with kid {} in the JWKS",
            kid.unwrap_or("(none)")
        )))
    }

    /// Reads the source again unless another caller just did, or the last attempt (of
    /// the same cause, for an unknown `kid`) is too recent.
    async fn refresh(&self, why: Refresh) -> anyhow::Result<()> {
        let seen = self.snapshot().fetched_at;
        let mut log = self.fetch.lock().await;
        if self.snapshot().fetched_at != seen {
            return Ok(()); // Someone read it while this caller waited.
        }
        let now = self.clock.instant();
        let recent = |at: Option<Instant>| {
            at.is_some_and(|at| now.saturating_duration_since(at) < JWKS_MIN_INTERVAL)
        };
        match why {
            Refresh::Stale if recent(log.attempted_at) => return Ok(()),
            Refresh::UnknownKid if recent(log.unknown_kid_at) => return Ok(()),
            Refresh::UnknownKid => log.unknown_kid_at = Some(now),
            Refresh::Stale => {}
        }
        log.attempted_at = Some(now);
        let bytes = self.read_source().await?;
        let keys = parse_jwks(&bytes)?;
        let set = Arc::new(KeySet {
            keys,
            fetched_at: Some(self.clock.instant()),
        });
        *self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = set;
        Ok(())
    }

    async fn read_source(&self) -> anyhow::Result<Vec<u8>> {
        match &self.source {
            JwksSource::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .with_context(|| format!("reading {}", path.display()))?;
                if bytes.len() > JWKS_MAX_BYTES {
                    bail!("{} is larger than {JWKS_MAX_BYTES} bytes", path.display());
                }
                Ok(bytes)
            }
            JwksSource::Url(client, url) => {
                // What errors (and so logs) show.
                let shown = without_credentials(url);
                let mut resp = client
                    .get(url.clone())
                    .send()
                    .await
                    .with_context(|| format!("fetching {shown}"))?;
                // A redirect is an answer like any other, not followed (nor is a 3xx a set).
                if !resp.status().is_success() {
                    bail!("fetching {shown}: answered {}", resp.status());
                }
                let mut bytes = Vec::new();
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .with_context(|| format!("reading {shown}"))?
                {
                    if bytes.len() + chunk.len() > JWKS_MAX_BYTES {
                        bail!("{shown} answered more than {JWKS_MAX_BYTES} bytes");
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(bytes)
            }
        }
    }
}

/// Whether `url` names a loopback host: `127.0.0.0/8`, `::1` or `localhost`.
fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[derive(Clone, Copy)]
enum Refresh {
    /// The set is old (or was never read).
    Stale,
    /// A token named a `kid` the set does not have (a rotation).
    UnknownKid,
}

impl KeySet {
    /// With a `kid`, the key of that id; without, the first key for the algorithm.
    fn find(&self, alg: Algorithm, kid: Option<&str>) -> Option<DecodingKey> {
        self.keys
            .iter()
            .find(|k| k.alg == alg && (kid.is_none() || k.kid.as_deref() == kid))
            .map(|k| k.key.clone())
    }
}

/// The RS256 and ES256 signing keys of a JWKS document; other keys (encryption keys,
/// other algorithms or curves, malformed entries) are skipped.
fn parse_jwks(bytes: &[u8]) -> anyhow::Result<Vec<JwkKey>> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let doc: Document = serde_json::from_slice(bytes).context("not a JWKS document")?;
    let keys = doc
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| {
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                return None;
            }
            let alg = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                _ => return None,
            };
            let declared = jwk.common.key_algorithm;
            let fits = match alg {
                Algorithm::RS256 => declared.is_none_or(|a| a == KeyAlgorithm::RS256),
                _ => declared.is_none_or(|a| a == KeyAlgorithm::ES256),
            };
            if !fits {
                return None;
            }
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some(JwkKey {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            })
        })
        .collect();
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    #[test]
    fn a_public_key_without_an_audience_is_warned_about() {
        let with = |tweak: fn(&mut Config)| {
            let mut config = Config::default();
            tweak(&mut config);
            audience_warning(&config)
        };
        let pem = |c: &mut Config| c.jwt_public_key_file = Some("idp.pem".into());
        let jwks = |c: &mut Config| c.jwt_jwks = Some("https://idp.example.test/jwks".into());
        assert!(with(pem).is_some_and(|w| w.contains("jwt_audience")));
        assert!(with(jwks).is_some());
        // Also with an issuer: any application of that issuer could still sign in.
        assert!(
            with(|c| {
                c.jwt_jwks = Some("https://idp.example.test/jwks".into());
                c.jwt_issuer = Some("https://idp.example.test/".into());
            })
            .is_some()
        );

        assert_eq!(
            with(|c| {
                c.jwt_public_key_file = Some("idp.pem".into());
                c.jwt_audience = Some("chorus".into());
            }),
            None
        );
        assert_eq!(
            with(|c| {
                c.jwt_jwks = Some("https://idp.example.test/jwks".into());
                c.jwt_audience = Some("chorus".into());
            }),
            None
        );
        let hs256 = |c: &mut Config| c.jwt_secret = Some("an-application-secret".into());
        assert_eq!(with(hs256), None, "the application's own secret");
        assert_eq!(with(|_| {}), None, "no JWTs at all");
    }

    /// `exp` and `nbf` are judged against the configured clock, not the system's: here
    /// a test clock in 2033 that moves only with tokio's paused time.
    #[tokio::test(start_paused = true)]
    async fn exp_and_nbf_are_judged_on_the_configured_clock() {
        let start: i64 = 2_000_000_000;
        let secret = "a-test-secret-of-some-length-000";
        let config = Config {
            jwt_secret: Some(secret.to_owned()),
            clock: Clock::following_tokio(start * 1000),
            ..Config::default()
        };
        let verifier = JwtVerifier::from_config(&config)
            .await
            .expect("a valid configuration")
            .expect("a verifier");
        let token = |claims: serde_json::Value| {
            let key = EncodingKey::from_secret(secret.as_bytes());
            jsonwebtoken::encode(&Header::default(), &claims, &key).expect("encodes")
        };
        let short = token(json!({"sub": "alice", "exp": start + 60}));
        let early = token(json!({"sub": "alice", "exp": start + 3600, "nbf": start + 120}));
        assert!(verifier.verify(&short).await.is_ok());
        assert!(
            verifier.verify(&early).await.is_err(),
            "nbf beyond the leeway"
        );

        tokio::time::advance(Duration::from_secs(90)).await;
        assert!(
            verifier.verify(&early).await.is_ok(),
            "nbf within the leeway"
        );
        assert!(
            matches!(verifier.verify(&short).await, Err(JwtError::Invalid(_))),
            "expired 30 s ago"
        );
    }

    #[test]
    fn a_jwks_keeps_only_signing_keys_it_can_use() {
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": "sXch", "e": "AQAB"},
            {"kty": "EC", "kid": "e", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {"kty": "nonsense"}
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes()).expect("parses");
        let found: Vec<_> = keys
            .iter()
            .map(|k| (k.kid.as_deref().unwrap_or(""), k.alg))
            .collect();
        assert_eq!(found, [("r", Algorithm::RS256), ("e", Algorithm::ES256)]);
    }

    #[test]
    fn subjects_become_distinct_valid_names() {
        assert_eq!(subject_name("alice"), "alice");
        let a = subject_name("auth0|64f0c2a9e1b7");
        let b = subject_name("auth0_64f0c2a9e1b7");
        assert!(a.starts_with("auth0_64f0c2a9e1b7-"), "{a}");
        assert_ne!(a, b);
        for sub in [
            "Alice@Example.com",
            "f47ac10b-58cc-4372-a567-0e02b2c3d479",
            "Ünïcode ✓",
        ] {
            let name = subject_name(sub);
            assert!(valid_user_name(&name), "{sub} → {name}");
        }
        assert!(subject_name("").starts_with("u-"));
        assert_eq!(truncate("éé", 3), "é");
    }

    #[test]
    fn loopback_hosts_are_told_apart() {
        let loopback = |url: &str| is_loopback(&reqwest::Url::parse(url).expect("a URL"));
        for url in [
            "http://127.0.0.1:8080/jwks",
            "http://127.1.2.3/",
            "http://[::1]:9000/",
            "http://localhost/",
            "http://LOCALHOST:1/",
        ] {
            assert!(loopback(url), "{url}");
        }
        for url in [
            "http://10.0.0.1/",
            "http://[::ffff:10.0.0.1]/",
            "http://localhost.example/",
            "http://127.0.0.1.nip.io/",
            "http://0.0.0.0/",
        ] {
            assert!(!loopback(url), "{url}");
        }
    }

    #[test]
    fn times_out_of_range_are_refused() {
        assert!(unix_time(-1.0).is_none());
        assert!(unix_time(f64::NAN).is_none());
        assert_eq!(unix_time(10.0), Some(UNIX_EPOCH + Duration::from_secs(10)));
    }
}
