//! What every handler can reach, passed explicitly through axum's `State`.

use std::sync::Arc;

use chorus_chat::Chat;
use chorus_realtime::{Engine, SessionHooks};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::limits::HttpLimiter;
use crate::webhooks::WebhookMetrics;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub chat: Arc<Chat>,
    pub engine: Arc<Engine>,
    pub hooks: Arc<dyn SessionHooks>,
    pub auth: Arc<Authenticator>,
    pub http_limiter: Option<Arc<HttpLimiter>>,
    pub webhooks: Arc<WebhookMetrics>,
}
