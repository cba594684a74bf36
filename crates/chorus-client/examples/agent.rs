//! An example AI agent for Chorus: it connects, waits for events that *wake* it
//! (`"wake": true`), and answers each one in the channel, streaming the answer as a
//! model would produce it (people see it grow, word by word). What it only *observes*
//! (`"wake": false`) it leaves alone, and it never answers another agent, so two agents
//! cannot talk in circles. Replace [`Agent::answer`] with a call to your model, and
//! feed its tokens to the [`StreamWriter`](chorus_client::StreamWriter).
//!
//! ```sh
//! CHORUS_URL=http://127.0.0.1:7800 CHORUS_TOKEN=chr_… cargo run -p chorus-client --example agent
//! ```

use std::collections::HashMap;
use std::time::Duration;

use chorus_client::{
    Client, EventFrame, Message, Realtime, Result, SendMessage, Timestamp, User, UserId, UserKind,
    UserProfile,
};

/// How long the example "model" takes per word.
const TOKEN_PACE: Duration = Duration::from_millis(20);

/// The agent's state: who it is, and the people it has met (to greet them by name and
/// to tell humans from agents).
struct Agent {
    client: Client,
    me: User,
    people: HashMap<UserId, UserProfile>,
}

impl Agent {
    async fn new(client: Client) -> Result<Self> {
        let me = client.me().await?;
        Ok(Self {
            client,
            me,
            people: HashMap::new(),
        })
    }

    /// Handles events until the connection is closed for good. The realtime client
    /// reconnects and resumes by itself, so no wake-up is lost to a short outage.
    async fn run(&mut self, live: &mut Realtime) {
        while let Some(event) = live.next_event().await {
            match self.handle(&event).await {
                Ok(Some(reply)) => {
                    eprintln!("answered in channel {}: {}", reply.channel_id, reply.text)
                }
                Ok(None) => {}
                Err(err) => eprintln!("could not answer {}: {err}", event.kind),
            }
        }
    }

    /// Answers a `message.created` that woke the agent; ignores everything else.
    async fn handle(&mut self, event: &EventFrame) -> Result<Option<Message>> {
        if event.kind != "message.created" || event.wake != Some(true) {
            return Ok(None);
        }
        let Ok(message) = serde_json::from_value::<Message>(event.data.clone()) else {
            return Ok(None);
        };
        // The server never wakes an author with their own message; this is a guard
        // against a misconfigured policy, not a rule the agent relies on.
        if message.author_id == self.me.id || message.deleted {
            return Ok(None);
        }
        let author = self.person(&message).await?;
        if author.kind == UserKind::Agent {
            return Ok(None);
        }
        let answer = self.answer(&author, &message);
        // The first word opens the message: its mention is what tells the author (who is
        // woken is decided once, from the text a stream is opened with).
        let mut words = answer.split_inclusive(' ');
        let opening = SendMessage {
            thread_id: message.thread_id,
            ..SendMessage::new(words.next().unwrap_or_default())
        };
        let mut stream = self
            .client
            .open_stream(message.channel_id, &opening)
            .await?;
        for word in words {
            // A model's tokens come at their own pace; the writer sends what piled up
            // at most every 50 ms, not one request per token.
            tokio::time::sleep(TOKEN_PACE).await;
            if let Err(err) = stream.append(word).await {
                // Stopped by a person (cancelled), or the server ended it: say why.
                eprintln!("stream {} ended early: {err}", stream.message().id);
                return Err(err);
            }
        }
        Ok(Some(stream.complete().await?))
    }

    /// What to say. A real agent would ask a model here.
    fn answer(&self, author: &UserProfile, message: &Message) -> String {
        let mut quote: String = message.text.chars().take(200).collect();
        if quote.len() < message.text.len() {
            quote.push('…');
        }
        format!("@{} {} here, on it: \"{quote}\"", author.name, self.me.name)
    }

    /// The message's author, from the channel's workspace members (fetched once).
    async fn person(&mut self, message: &Message) -> Result<UserProfile> {
        if let Some(user) = self.people.get(&message.author_id) {
            return Ok(user.clone());
        }
        let channel = self.client.get_channel(message.channel_id).await?;
        let members = self
            .client
            .list_workspace_members(channel.channel.workspace_id)
            .await?;
        for member in members {
            self.people.insert(member.user.id, member.user);
        }
        Ok(self
            .people
            .get(&message.author_id)
            .cloned()
            .unwrap_or_else(|| UserProfile {
                id: message.author_id,
                name: format!("user-{}", message.author_id),
                display_name: String::new(),
                kind: UserKind::Human,
                status_text: String::new(),
                created_at: Timestamp(0),
            }))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::var("CHORUS_URL").unwrap_or_else(|_| "http://127.0.0.1:7800".into());
    let Ok(token) = std::env::var("CHORUS_TOKEN") else {
        eprintln!("set CHORUS_TOKEN to the agent's token");
        std::process::exit(2);
    };
    let client = Client::new(&url, token)?;
    let mut agent = Agent::new(client.clone()).await?;
    let mut live = client.realtime().await?;
    eprintln!("{} is listening on {url}", agent.me.name);
    agent.run(&mut live).await;
    Ok(())
}

// The client tests' harness: a real server in-process.
#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod common;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chorus_client::{CreateUser, Policy, UpdateChannel};

    use super::*;
    use crate::common;

    #[tokio::test]
    async fn the_example_agent_answers_only_what_wakes_it() {
        let w = common::world().await;
        let admin = w.server.admin();
        let helper = admin
            .create_user(&CreateUser::agent("helper"))
            .await
            .unwrap();
        let add = chorus_client::AddMember {
            user_id: helper.user.id,
            role: chorus_client::Role::Member,
        };
        w.alice
            .add_workspace_member(w.workspace, &add)
            .await
            .unwrap();
        let ch = w.general.id;
        w.alice
            .add_channel_member(ch, helper.user.id)
            .await
            .unwrap();
        let mentions = UpdateChannel {
            policy: Some(Policy::Mentions),
            ..UpdateChannel::default()
        };
        w.alice.update_channel(ch, &mentions).await.unwrap();

        let agent_client = admin.with_token(helper.token.clone());
        let mut agent = Agent::new(agent_client.clone()).await.unwrap();
        let mut agent_live = agent_client.realtime().await.unwrap();
        let task = tokio::spawn(async move { agent.run(&mut agent_live).await });
        let mut bob = w.bob.realtime().await.unwrap();

        // Observed only (policy `mentions`, nobody mentioned): no answer. Bob and
        // another agent's message are never answered either.
        w.alice
            .send_message(ch, &SendMessage::new("lunch at noon"), None)
            .await
            .unwrap();
        // Woken by a mention: answered in the channel.
        let asked = w
            .alice
            .send_message(ch, &SendMessage::new("@helper is the build green?"), None)
            .await
            .unwrap()
            .message;
        // The answer is streamed: opened with its first word, completed whole.
        let opened = loop {
            let event = common::next_of_type(&mut bob, "message.created").await;
            let message: Message = serde_json::from_value(event.data).unwrap();
            if message.author_id == helper.user.id {
                break message;
            }
        };
        assert_eq!(opened.state, chorus_client::MessageState::Streaming);
        assert_eq!(opened.text, "@alice ");
        let answer = loop {
            let event = common::next_of_type(&mut bob, "message.completed").await;
            let message: Message = serde_json::from_value(event.data).unwrap();
            if message.id == opened.id {
                break message;
            }
        };
        assert_eq!(answer.channel_id, ch);
        assert_eq!(
            answer.text,
            "@alice helper here, on it: \"@helper is the build green?\""
        );
        // The agent works through events in order: had it answered the first message,
        // that answer would be in the history before this one.
        let history = w
            .alice
            .list_messages(ch, &Default::default())
            .await
            .unwrap();
        let ids: Vec<_> = history.iter().map(|m| m.id).collect();
        assert_eq!(ids.len(), 3, "{history:?}");
        assert_eq!(ids[1], asked.id);
        assert_eq!(ids[2], answer.id);
        task.abort();
    }
}
