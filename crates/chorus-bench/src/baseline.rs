//! The baseline: a minimal WebSocket broadcast server (no auth, no storage, no scopes).
//! Every text frame received is sent, as the same bytes, to every connection. Built
//! the way a careful engineer would build the simplest thing: one task per connection,
//! a tokio broadcast channel, batched writes.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let (tx, _) = broadcast::channel::<Message>(1024);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let tx = tx.clone();
        tokio::spawn(async move {
            let config = WebSocketConfig::default()
                .read_buffer_size(4 * 1024)
                .write_buffer_size(8 * 1024);
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            else {
                return;
            };
            let mut rx = tx.subscribe();
            loop {
                tokio::select! {
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Text(t))) => { let _ = tx.send(Message::Text(t)); }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                    frame = rx.recv() => match frame {
                        Ok(frame) => {
                            if ws.feed(frame).await.is_err() { return; }
                            for _ in 1..64 {
                                match rx.try_recv() {
                                    Ok(frame) => if ws.feed(frame).await.is_err() { return; },
                                    Err(_) => break,
                                }
                            }
                            if ws.flush().await.is_err() { return; }
                        }
                        // A lagging receiver loses frames; the load generator counts them.
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
    }
}
