//! WebSocket compression (`permessage-deflate`, RFC 7692), off by default and on with
//! `ws_compression`. The client here is written for these tests, on its own: the
//! handshake by hand, frames parsed and built by hand, and compression with `flate2`
//! directly — nothing of the server's implementation.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, WAIT};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// A server frame: whether RSV1 was set, its opcode, its payload as sent.
#[derive(Debug)]
struct RawFrame {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// A client that may offer `permessage-deflate`.
struct Client {
    tcp: TcpStream,
    /// The server's `Sec-WebSocket-Extensions` answer, if any.
    extensions: Option<String>,
}

impl Client {
    async fn connect(s: &TestServer, token: &str, offer: Option<&str>) -> Self {
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        let offer = offer.map_or_else(String::new, |offer| {
            format!("Sec-WebSocket-Extensions: {offer}\r\n")
        });
        let request = format!(
            "GET /ws?token={token} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{offer}\r\n",
            s.addr
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(WAIT, tcp.read(&mut byte))
                .await
                .expect("handshake timed out")
                .unwrap();
            assert!(n == 1, "connection closed during the handshake");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
        let extensions = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_owned())
        });
        let mut client = Self { tcp, extensions };
        let hello = client.recv_json().await;
        assert_eq!(hello["op"], "hello", "{hello}");
        client
    }

    /// The next frame; `None` when the connection ends.
    async fn frame(&mut self) -> Option<RawFrame> {
        tokio::time::timeout(WAIT, async {
            let mut head = [0u8; 2];
            self.tcp.read_exact(&mut head).await.ok()?;
            assert_eq!(head[1] & 0x80, 0, "server frames are never masked");
            let len = match head[1] & 0x7f {
                126 => u64::from(self.tcp.read_u16().await.ok()?),
                127 => self.tcp.read_u64().await.ok()?,
                n => u64::from(n),
            };
            let mut payload = vec![0u8; usize::try_from(len).unwrap()];
            self.tcp.read_exact(&mut payload).await.ok()?;
            Some(RawFrame {
                fin: head[0] & 0x80 != 0,
                rsv1: head[0] & 0x40 != 0,
                opcode: head[0] & 0x0f,
                payload,
            })
        })
        .await
        .expect("no frame from the server within the wait limit")
    }

    /// The next text message, inflated if it came compressed, and whether it did.
    async fn recv_text(&mut self) -> (String, bool) {
        loop {
            let frame = self.frame().await.expect("connection open");
            match frame.opcode {
                0x9 | 0xA => continue, // pings and pongs
                0x1 => {}
                other => panic!("expected a text frame, got opcode {other}: {frame:?}"),
            }
            assert!(frame.fin, "the server sends whole messages");
            if !frame.rsv1 {
                return (String::from_utf8(frame.payload).unwrap(), false);
            }
            let agreed = self.extensions.as_deref().unwrap_or("");
            assert!(
                agreed.contains("permessage-deflate"),
                "RSV1 without the extension"
            );
            return (String::from_utf8(inflate(&frame.payload)).unwrap(), true);
        }
    }

    async fn recv_json(&mut self) -> Value {
        serde_json::from_str(&self.recv_text().await.0).unwrap()
    }

    /// The next event of type `kind` (others skipped) and whether it came compressed.
    async fn expect_event(&mut self, kind: &str) -> (Value, bool) {
        loop {
            let (text, compressed) = self.recv_text().await;
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["op"] == "event" && v["type"] == kind {
                return (v, compressed);
            }
        }
    }

    /// The reply with this `id` (events skipped) and whether it came compressed.
    async fn reply(&mut self, id: u64) -> (Value, bool) {
        loop {
            let (text, compressed) = self.recv_text().await;
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                return (v, compressed);
            }
        }
    }

    /// Sends a text message in frames of these payloads (the first with RSV1 when
    /// `compressed`); the payloads are what the caller made of the message.
    async fn send_frames(&mut self, parts: &[&[u8]], compressed: bool) {
        let mut wire = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let fin = i + 1 == parts.len();
            let opcode = if i == 0 { 0x1 } else { 0x0 };
            let rsv1 = compressed && i == 0;
            wire.extend(client_frame(opcode, fin, rsv1, part));
        }
        self.tcp.write_all(&wire).await.unwrap();
    }

    async fn send_compressed(&mut self, text: &str) {
        self.send_frames(&[&deflate(text.as_bytes())], true).await;
    }

    /// The close code the server sends before ending the connection (frames before it
    /// skipped); `None` if it ends without one.
    async fn expect_close(&mut self) -> Option<u16> {
        while let Some(frame) = self.frame().await {
            if frame.opcode == 0x8 {
                return (frame.payload.len() >= 2)
                    .then(|| u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
            }
        }
        None
    }
}

/// A client frame, masked.
fn client_frame(opcode: u8, fin: bool, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![opcode | if fin { 0x80 } else { 0 } | if rsv1 { 0x40 } else { 0 }];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// RFC 7692 §7.2.1: raw deflate, sync flush, the 4-byte tail removed.
fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(bytes.len() + 64);
    c.compress_vec(bytes, &mut out, FlushCompress::Sync)
        .unwrap();
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - 4);
    out
}

/// RFC 7692 §7.2.2: the tail appended, raw inflate.
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = payload.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(payload.len() * 20 + 1024);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    assert_eq!(d.total_in() as usize, input.len(), "all of it inflated");
    out
}

const OFFER: &str = "permessage-deflate; client_max_window_bits";
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

async fn compressing_server() -> TestServer {
    TestServer::start_with(|c| c.ws_compression = true).await
}

#[tokio::test]
async fn compression_is_agreed_only_when_enabled_and_offered() {
    // Off (the default): an offer is ignored, and a compressed frame is a protocol
    // error, as it always was.
    let s = TestServer::start().await;
    let w = s.world().await;
    let mut c = Client::connect(&s, &w.alice.token, Some(OFFER)).await;
    assert_eq!(c.extensions, None);
    c.send_compressed(&json!({"op": "ping", "id": 1}).to_string())
        .await;
    assert_eq!(c.expect_close().await, None, "dropped without a reply");

    // On: agreed when offered, with no context takeover both ways.
    let s = compressing_server().await;
    let w = s.world().await;
    let c = Client::connect(&s, &w.alice.token, Some(OFFER)).await;
    assert_eq!(c.extensions.as_deref(), Some(ANSWER));
    // Several offers: the first acceptable one (a 10-bit server window is not).
    let c = Client::connect(
        &s,
        &w.alice.token,
        Some("permessage-deflate; server_max_window_bits=10, permessage-deflate"),
    )
    .await;
    assert_eq!(c.extensions.as_deref(), Some(ANSWER));
    // Not offered, or nothing acceptable offered: no extension, and none used.
    for offer in [
        None,
        Some("x-webkit-deflate-frame"),
        Some("permessage-deflate; foo"),
    ] {
        let mut c = Client::connect(&s, &w.alice.token, offer).await;
        assert_eq!(c.extensions, None, "{offer:?}");
        c.send_compressed(&json!({"op": "ping", "id": 1}).to_string())
            .await;
        assert_eq!(c.expect_close().await, None, "{offer:?}: RSV1 is refused");
    }
}

#[tokio::test]
async fn compressed_events_are_the_events_an_uncompressed_client_gets() {
    let s = compressing_server().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob, &w.carol])
        .await;
    let mut bob = Client::connect(&s, &w.bob.token, Some(OFFER)).await;
    let mut carol = Client::connect(&s, &w.carol.token, None).await;
    let mut bob2 = Client::connect(&s, &w.bob.token, Some(OFFER)).await;

    let long = "the quick brown fox jumps over the lazy dog; ".repeat(20);
    for text in [long.as_str(), "hi"] {
        let sent = s.send(&w.alice, ch, text).await;
        let (plain, compressed) = carol.expect_event("message.created").await;
        assert!(!compressed, "carol did not offer the extension");
        assert_eq!(plain["data"], sent);
        for client in [&mut bob, &mut bob2] {
            let (event, compressed) = client.expect_event("message.created").await;
            // Same JSON (bob and carol both plain members: no per-user marks).
            assert_eq!(event, plain);
            // Events over 128 bytes go out compressed; every `message.created` is.
            assert!(compressed, "a {}-byte message", text.len());
        }
    }

    // A small reply goes out as it is: compression is chosen message by message.
    bob.send_frames(
        &[json!({"op": "ping", "id": 5}).to_string().as_bytes()],
        false,
    )
    .await;
    let (ack, compressed) = bob.reply(5).await;
    assert_eq!(ack, json!({"op": "ack", "id": 5}));
    assert!(!compressed);
}

#[tokio::test]
async fn a_client_may_compress_its_messages() {
    let s = compressing_server().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob])
        .await;
    let mut bob = Client::connect(&s, &w.bob.token, Some(OFFER)).await;

    // One frame.
    bob.send_compressed(&json!({"op": "ping", "id": 1}).to_string())
        .await;
    assert_eq!(bob.reply(1).await.0, json!({"op": "ack", "id": 1}));

    // A compressed message in three fragments, a WebSocket ping between two of them,
    // and an uncompressed message right behind it.
    let op = json!({"op": "unsubscribe", "id": 2, "scope": format!("channel:{ch}")});
    let packed = deflate(op.to_string().as_bytes());
    let (a, rest) = packed.split_at(packed.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut wire = client_frame(0x1, false, true, a);
    wire.extend(client_frame(0x0, false, false, b));
    wire.extend(client_frame(0x9, true, false, b"are you there"));
    wire.extend(client_frame(0x0, true, false, c));
    wire.extend(client_frame(
        0x1,
        true,
        false,
        json!({"op": "ping", "id": 3}).to_string().as_bytes(),
    ));
    bob.tcp.write_all(&wire).await.unwrap();
    let pong = loop {
        let frame = bob.frame().await.expect("open");
        if frame.opcode == 0xA {
            break frame;
        }
    };
    assert_eq!(pong.payload, b"are you there");
    let (ack, _) = bob.reply(2).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    assert_eq!(bob.reply(3).await.0, json!({"op": "ack", "id": 3}));
    // The unsubscribe took effect: a message now is not delivered to bob, and a
    // subscribe (compressed) brings the channel back.
    s.send(&w.alice, ch, "while away").await;
    bob.send_compressed(
        &json!({"op": "subscribe", "id": 4, "scope": format!("channel:{ch}")}).to_string(),
    )
    .await;
    let (ack, _) = bob.reply(4).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    let sent = s.send(&w.alice, ch, "back").await;
    let (event, _) = bob.expect_event("message.created").await;
    assert_eq!(
        event["data"], sent,
        "the message sent while away was skipped"
    );
}

#[tokio::test]
async fn a_deflate_bomb_is_refused_with_1009_and_the_others_are_served() {
    let s = compressing_server().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob, &w.carol])
        .await;
    let mut bob = Client::connect(&s, &w.bob.token, Some(OFFER)).await;
    let mut carol = Client::connect(&s, &w.carol.token, Some(OFFER)).await;

    // 8 MiB of spaces inside a JSON string: about 8 KiB compressed, 8 times the
    // server's 1 MiB message limit inflated.
    let mut bomb = br#"{"op":"ping","id":1,"x":""#.to_vec();
    bomb.resize(bomb.len() + (8 << 20), b' ');
    bomb.extend_from_slice(br#""}"#);
    let packed = deflate(&bomb);
    assert!(packed.len() < 16 * 1024, "{} bytes", packed.len());
    bob.send_frames(&[&packed], true).await;
    assert_eq!(bob.expect_close().await, Some(1009), "message too big");

    // Carol, compressing too, is served as before, and can still send.
    let sent = s.send(&w.alice, ch, &"still here ".repeat(20)).await;
    let (event, compressed) = carol.expect_event("message.created").await;
    assert_eq!(event["data"], sent);
    assert!(compressed);
    carol
        .send_compressed(&json!({"op": "ping", "id": 9}).to_string())
        .await;
    assert_eq!(carol.reply(9).await.0, json!({"op": "ack", "id": 9}));

    // Invalid deflate data is a protocol error: the connection ends.
    carol.send_frames(&[b"\xff\xff\xff\xff"], true).await;
    assert!(carol.expect_close().await.is_none_or(|code| code == 1002));
}
