//! The chat rules. [`Chat`] is handed the store and the realtime engine explicitly;
//! each area of the API has its own file of `impl Chat` methods.

mod channels;
mod events;
mod messages;
mod realtime;
mod users;
mod workspaces;

use std::sync::Arc;

use chorus_realtime::Engine;

use crate::store::Store;

pub use channels::{CreateChannel, OpenDm, UpdateChannel};
pub use messages::{EditMessage, SendMessage};
pub use realtime::ChatHooks;
pub use users::CreateUser;
pub use workspaces::AddMember;

/// Domain limits.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Largest message text, in bytes.
    pub max_message_bytes: usize,
    /// `typing` signals per user per minute.
    pub typing_per_minute: u32,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 * 1024,
            typing_per_minute: 60,
        }
    }
}

pub struct Chat {
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    config: ChatConfig,
}

impl Chat {
    pub fn new(store: Arc<dyn Store>, engine: Arc<Engine>, config: ChatConfig) -> Self {
        Self {
            store,
            engine,
            config,
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn config(&self) -> &ChatConfig {
        &self.config
    }
}
