//! `permessage-deflate` (RFC 7692), negotiated per connection when the server allows it.
//!
//! Only the no-context-takeover form is ever agreed: the server's answer always carries
//! `server_no_context_takeover` and `client_no_context_takeover`, so every message, in
//! either direction, is compressed on its own (§7.1.1). That is what makes compression
//! affordable at fanout scale:
//! - outgoing, an event is compressed once and the compressed bytes are shared by every
//!   connection that negotiated the extension, exactly as the uncompressed frame text is
//!   shared by the others ([`crate::Event`] caches both), and no connection keeps a
//!   compressor (about 300 KiB with a 32 KiB window) for its whole life;
//! - incoming, a compressed message is inflated by a decompressor made for it and dropped
//!   after it: an idle connection holds no compression state at all.
//!
//! tungstenite, which reads the connection, knows nothing of the extension (and rejects a
//! frame with RSV1 set). [`Inflate`] sits under it, in the read half: it parses the frames
//! as they arrive, passes control frames and uncompressed messages through untouched, and
//! turns a compressed message (first frame with RSV1 set) into one ordinary frame with its
//! inflated payload (masked with the all-zero key, which masks nothing) before tungstenite
//! sees it. The inflated size is bounded by the connection's message limit: a small
//! message that inflates past it (a "deflate bomb") ends the connection with 1009 once the
//! limit is reached, having held at most the limit in memory.

use std::cell::RefCell;
use std::fmt::Write as _;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// Messages shorter than this go out uncompressed (RSV1 clear), which the extension
/// allows message by message (RFC 7692 §6): below it, deflate's block header and
/// Huffman tables save little or nothing, and the CPU is better spent elsewhere.
pub const MIN_COMPRESSED: usize = 128;

/// zlib's level: 1 (fastest) to 9 (smallest). Chorus's messages are small JSON objects,
/// compressed one by one with an empty window: a higher level buys a few bytes at most.
const LEVEL: u32 = 6;

/// The 4 bytes a sync flush ends with, which the sender removes and the receiver puts
/// back (RFC 7692 §7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Answers a client's `Sec-WebSocket-Extensions` offers (each header value a
/// comma-separated list): the value of the response header when an offer of
/// `permessage-deflate` is acceptable, `None` to decline (the connection then runs
/// uncompressed, as without the header).
///
/// Acceptable: any offer whose parameters are known, each given at most once, with valid
/// values (§7.1), except one that limits the server's window below 32 KiB
/// (`server_max_window_bits` < 15; this compressor always uses the full window, so such
/// an offer is declined and the next one considered, §7.1.2.1). `client_max_window_bits`
/// needs nothing: the inflater takes any window up to 32 KiB.
pub fn negotiate<'a>(offers: impl IntoIterator<Item = &'a str>) -> Option<String> {
    offers
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(accept_offer)
}

/// The response to one offer (`name; param; param=value`), if it is an acceptable
/// `permessage-deflate` offer.
fn accept_offer(offer: &str) -> Option<String> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut seen = [false; 4];
    let mut server_bits = false;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param, None),
        };
        let index = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            "server_max_window_bits" => {
                // Required value, 8..=15; only 15 (the whole window) is acceptable here.
                if window_bits(value?)? != 15 {
                    return None;
                }
                server_bits = true;
                2
            }
            "client_max_window_bits" => {
                // Optional value: the client may be told a limit; none is needed.
                if let Some(value) = value {
                    window_bits(value)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None; // a parameter given twice declines the offer (§7.1)
        }
    }
    let mut answer = format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
    if server_bits {
        // Accepting the parameter means answering it, with the same or a smaller value.
        let _ = write!(answer, "; server_max_window_bits=15");
    }
    Some(answer)
}

/// A `*_max_window_bits` value: a decimal 8..=15 without leading zeros (§7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.len() > 2 || value.starts_with('0') {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

thread_local! {
    /// One compressor per thread, reset for every message (no context takeover): making
    /// one allocates its window and hash tables, a few hundred KiB.
    static COMPRESSOR: RefCell<Compress> =
        RefCell::new(Compress::new(Compression::new(LEVEL), false));
}

/// A message's payload compressed on its own (raw deflate, sync-flushed, the 4-byte tail
/// removed: the payload of a frame with RSV1 set); `None` when it is better sent as is
/// (shorter than [`MIN_COMPRESSED`], or no smaller compressed).
pub fn compress(payload: &[u8]) -> Option<Bytes> {
    if payload.len() < MIN_COMPRESSED {
        return None;
    }
    COMPRESSOR.with_borrow_mut(|compressor| {
        compressor.reset();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        let mut input = payload;
        loop {
            let before = compressor.total_in();
            compressor
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .ok()?;
            input = &input[(compressor.total_in() - before) as usize..];
            // Done once all of the input is in and the flush left room to spare.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if !out.ends_with(&TAIL) {
            return None;
        }
        out.truncate(out.len() - TAIL.len());
        (out.len() < payload.len()).then(|| Bytes::from(out))
    })
}

/// Why a client's compressed message was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InflateError {
    /// It inflates past the connection's message limit: 1009, like an uncompressed
    /// message over it.
    #[error("compressed message inflates past {0} bytes")]
    TooBig(usize),
    /// Not valid per RFC 7692 (RSV1 on a continuation frame, a data frame inside a
    /// compressed message, an unmasked frame) or not valid deflate data: a protocol
    /// error, which ends the connection as any other does.
    #[error("invalid compressed message: {0}")]
    Invalid(&'static str),
}

impl From<InflateError> for std::io::Error {
    fn from(err: InflateError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, err)
    }
}

impl InflateError {
    /// Whether `err` (as tungstenite hands back a read error) is a compressed message
    /// over the limit.
    pub fn is_too_big(err: &std::io::Error) -> bool {
        err.get_ref()
            .and_then(|inner| inner.downcast_ref::<Self>())
            .is_some_and(|err| matches!(err, Self::TooBig(_)))
    }
}

/// Where the parser is in the current frame.
#[derive(Debug, Clone, Copy)]
enum FrameState {
    /// Waiting for a frame header.
    Header,
    /// Copying `left` more bytes of a frame through as they are.
    Pass { left: u64 },
    /// Taking `left` more bytes of a compressed message's frame; `at` counts the bytes
    /// unmasked so far (the mask's phase).
    Collect {
        left: u64,
        mask: [u8; 4],
        at: u64,
        fin: bool,
    },
}

/// A compressed message being received.
struct Message {
    /// The first frame's opcode (text or binary).
    opcode: u8,
    decompress: Decompress,
    inflated: Vec<u8>,
    /// The deflate stream ended (a final block): anything after it is ignored.
    ended: bool,
}

/// The inflating frame filter of one connection's read half (see the module docs).
pub struct Inflate {
    /// Bytes read from the socket, not yet parsed.
    raw: Vec<u8>,
    /// Bytes for tungstenite, and how much of them it has taken.
    ready: Vec<u8>,
    taken: usize,
    frame: FrameState,
    message: Option<Box<Message>>,
    /// The largest inflated message.
    max: usize,
    /// Set once the stream was refused: nothing more is parsed, every read fails.
    failed: Option<InflateError>,
    /// Reading a server's frames (a client: the load generator, tests): they come
    /// unmasked and go to the client's WebSocket unmasked.
    from_server: bool,
    /// A client keeps its decompressor between messages (reset, not remade: making
    /// one zeroes its 32 KiB window); a server does not, so that an idle connection
    /// holds none.
    spare: Option<Box<Message>>,
}

impl Inflate {
    pub fn new(max: usize) -> Self {
        Self {
            raw: Vec::new(),
            ready: Vec::new(),
            taken: 0,
            frame: FrameState::Header,
            message: None,
            max,
            failed: None,
            from_server: false,
            spare: None,
        }
    }

    /// The filter for a client's read half: inflates a server's compressed messages.
    pub fn for_client(max: usize) -> Self {
        Self {
            from_server: true,
            ..Self::new(max)
        }
    }

    /// A filter whose stream was refused before it was read (in what the client sent
    /// behind its upgrade request): the first read fails with `err`.
    pub fn failed(err: InflateError) -> Self {
        Self {
            failed: Some(err),
            ..Self::new(0)
        }
    }

    /// The refusal, once the stream was refused.
    pub fn check(&self) -> Result<(), InflateError> {
        match &self.failed {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }

    /// Copies what is ready into `out`; returns how many bytes.
    pub fn take(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.ready.len() - self.taken);
        out[..n].copy_from_slice(&self.ready[self.taken..self.taken + n]);
        self.taken += n;
        if self.taken == self.ready.len() {
            // Nothing kept: an idle connection holds no buffer.
            self.ready = Vec::new();
            self.taken = 0;
        }
        n
    }

    pub fn has_ready(&self) -> bool {
        self.taken < self.ready.len()
    }

    /// Takes bytes read from the socket and turns whatever whole parts they complete
    /// into bytes for tungstenite.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), InflateError> {
        self.check()?;
        self.raw.extend_from_slice(bytes);
        let mut raw = std::mem::take(&mut self.raw);
        let result = self.process(&mut raw);
        if let Err(err) = &result {
            // Refused: drop what is held (an inflated message may be near the limit).
            self.failed = Some(err.clone());
            self.message = None;
            self.raw = Vec::new();
            return result;
        }
        self.raw = raw;
        if self.raw.is_empty() {
            self.raw = Vec::new();
        }
        result
    }

    /// Parses `raw`, removing what it used.
    fn process(&mut self, raw: &mut Vec<u8>) -> Result<(), InflateError> {
        let mut at = 0;
        loop {
            let avail = raw.len() - at;
            match self.frame {
                FrameState::Header => {
                    let Some((header_len, header)) = parse_header(&raw[at..]) else {
                        break;
                    };
                    let bytes = &raw[at..at + header_len];
                    at += header_len;
                    self.frame = self.start_frame(header)?;
                    if let FrameState::Pass { .. } = self.frame {
                        self.ready.extend_from_slice(bytes);
                    }
                    if let FrameState::Collect {
                        left: 0, fin: true, ..
                    } = self.frame
                    {
                        self.frame = FrameState::Header;
                        self.finish()?;
                    }
                }
                FrameState::Pass { left } => {
                    let n = left.min(avail as u64) as usize;
                    if n == 0 && left > 0 {
                        break;
                    }
                    self.ready.extend_from_slice(&raw[at..at + n]);
                    at += n;
                    self.frame = match left - n as u64 {
                        0 => FrameState::Header,
                        left => FrameState::Pass { left },
                    };
                }
                FrameState::Collect {
                    left,
                    mask,
                    at: phase,
                    fin,
                } => {
                    let n = left.min(avail as u64) as usize;
                    if n == 0 && left > 0 {
                        break;
                    }
                    let chunk = &mut raw[at..at + n];
                    for (i, byte) in chunk.iter_mut().enumerate() {
                        *byte ^= mask[((phase + i as u64) % 4) as usize];
                    }
                    self.inflate(&raw[at..at + n])?;
                    at += n;
                    let left = left - n as u64;
                    if left > 0 {
                        self.frame = FrameState::Collect {
                            left,
                            mask,
                            at: phase + n as u64,
                            fin,
                        };
                    } else {
                        self.frame = FrameState::Header;
                        if fin {
                            self.finish()?;
                        }
                    }
                }
            }
        }
        raw.drain(..at);
        Ok(())
    }

    /// What to do with a frame whose header was just read.
    fn start_frame(&mut self, header: Header) -> Result<FrameState, InflateError> {
        let is_control = header.opcode >= 8;
        let compressed = self.message.is_some();
        if is_control || (!compressed && !header.rsv1) {
            // Control frames (which may come between a message's frames) and uncompressed
            // messages: tungstenite checks them as it always does.
            return Ok(FrameState::Pass {
                left: header.length,
            });
        }
        let mask = match (header.mask, self.from_server) {
            (Some(mask), false) => mask,
            (None, true) => [0; 4],
            (None, false) => return Err(InflateError::Invalid("unmasked frame from a client")),
            (Some(_), true) => return Err(InflateError::Invalid("masked frame from a server")),
        };
        if header.rsv2 || header.rsv3 {
            return Err(InflateError::Invalid("RSV2 or RSV3 set"));
        }
        if compressed {
            // Inside a compressed message only its continuation frames may come, and
            // RSV1 is set on the first frame only (RFC 7692 §6.1).
            if header.opcode != 0 {
                return Err(InflateError::Invalid(
                    "a new data frame inside a fragmented message",
                ));
            }
            if header.rsv1 {
                return Err(InflateError::Invalid("RSV1 set on a continuation frame"));
            }
        } else {
            // RSV1 on a data frame: a compressed message begins.
            if header.opcode != 1 && header.opcode != 2 {
                return Err(InflateError::Invalid(
                    "RSV1 set on a frame that does not begin a message",
                ));
            }
            let message = match self.spare.take() {
                Some(mut spare) => {
                    spare.decompress.reset(false);
                    spare.opcode = header.opcode;
                    spare.inflated.clear();
                    spare.ended = false;
                    spare
                }
                None => Box::new(Message {
                    opcode: header.opcode,
                    decompress: Decompress::new(false),
                    inflated: Vec::new(),
                    ended: false,
                }),
            };
            self.message = Some(message);
        }
        if header.length > self.max as u64 {
            // Compressed, it can only be larger inflated (or a waste of the link).
            return Err(InflateError::TooBig(self.max));
        }
        Ok(FrameState::Collect {
            left: header.length,
            mask,
            at: 0,
            fin: header.fin,
        })
    }

    /// Inflates compressed bytes of the current message, within the limit.
    fn inflate(&mut self, mut input: &[u8]) -> Result<(), InflateError> {
        let max = self.max;
        let Some(message) = self.message.as_deref_mut() else {
            return Err(InflateError::Invalid("no compressed message"));
        };
        while !input.is_empty() && !message.ended {
            let out = &mut message.inflated;
            if out.len() == out.capacity() {
                if out.len() > max {
                    return Err(InflateError::TooBig(max));
                }
                // Grow by doubling, never past one byte over the limit: memory is bounded
                // by the limit whatever the input claims.
                let room = out.len().max(256).min(max + 1 - out.len());
                out.reserve_exact(room);
            }
            let before_in = message.decompress.total_in();
            let before_out = out.len();
            let status = message
                .decompress
                .decompress_vec(input, out, FlushDecompress::None)
                .map_err(|_| InflateError::Invalid("not valid deflate data"))?;
            input = &input[(message.decompress.total_in() - before_in) as usize..];
            if out.len() > max {
                return Err(InflateError::TooBig(max));
            }
            match status {
                Status::StreamEnd => message.ended = true,
                Status::Ok | Status::BufError => {
                    let progressed =
                        message.decompress.total_in() > before_in || out.len() > before_out;
                    if !progressed && out.len() < out.capacity() {
                        return Err(InflateError::Invalid("not valid deflate data"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The compressed message is complete: appends the tail (§7.2.2), flushes the
    /// inflater, and queues the message for tungstenite as one ordinary frame.
    fn finish(&mut self) -> Result<(), InflateError> {
        self.inflate(&TAIL)?;
        let max = self.max;
        let Some(mut message) = self.message.take() else {
            return Err(InflateError::Invalid("no compressed message"));
        };
        // Whatever the inflater still holds back (it had no room left).
        while !message.ended {
            let out = &mut message.inflated;
            if out.len() > max {
                return Err(InflateError::TooBig(max));
            }
            let room = out.len().max(256).min(max + 1 - out.len());
            out.reserve_exact(room);
            let before = out.len();
            let status = message
                .decompress
                .decompress_vec(&[], out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Invalid("not valid deflate data"))?;
            if out.len() > max {
                return Err(InflateError::TooBig(max));
            }
            if status == Status::StreamEnd || out.len() == before {
                break;
            }
        }
        let payload = &message.inflated;
        let first = 0x80 | message.opcode; // FIN, RSV clear
        self.ready.push(first);
        let masked = if self.from_server { 0 } else { 0x80 };
        let len = payload.len();
        if len < 126 {
            self.ready.push(masked | len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            self.ready.push(masked | 126);
            self.ready.extend_from_slice(&len.to_be_bytes());
        } else {
            self.ready.push(masked | 127);
            self.ready.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if !self.from_server {
            // The all-zero mask: tungstenite requires a client's frame masked, and XOR
            // with zero leaves the payload as it is.
            self.ready.extend_from_slice(&[0; 4]);
        }
        self.ready.extend_from_slice(payload);
        if self.from_server {
            self.spare = Some(message);
        }
        Ok(())
    }
}

/// A frame header's fields.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    rsv1: bool,
    rsv2: bool,
    rsv3: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    length: u64,
}

/// Parses a frame header at the start of `bytes`: its length and fields, or `None` when
/// more bytes are needed.
fn parse_header(bytes: &[u8]) -> Option<(usize, Header)> {
    let [first, second, ..] = *bytes else {
        return None;
    };
    let masked = second & 0x80 != 0;
    let (length, mut at) = match second & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        let key: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(key)
    } else {
        None
    };
    Some((
        at,
        Header {
            fin: first & 0x80 != 0,
            rsv1: first & 0x40 != 0,
            rsv2: first & 0x20 != 0,
            rsv3: first & 0x10 != 0,
            opcode: first & 0x0f,
            mask,
            length,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate_raw(payload: &[u8]) -> Vec<u8> {
        let mut d = Decompress::new(false);
        let mut input = payload.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(1 << 20);
        d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .expect("valid deflate");
        out
    }

    /// A client frame: masked with `key`, RSV1 as given.
    fn client_frame(opcode: u8, fin: bool, rsv1: bool, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut out = vec![opcode | if fin { 0x80 } else { 0 } | if rsv1 { 0x40 } else { 0 }];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xffff {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    fn drain(inflate: &mut Inflate) -> Vec<u8> {
        let mut out = vec![0; 1 << 21];
        let n = inflate.take(&mut out);
        out.truncate(n);
        out
    }

    #[test]
    fn negotiation_accepts_valid_offers_and_declines_the_rest() {
        let answer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        assert_eq!(negotiate(["permessage-deflate"]).as_deref(), Some(answer));
        assert_eq!(
            negotiate(["permessage-deflate; client_max_window_bits"]).as_deref(),
            Some(answer)
        );
        assert_eq!(
            negotiate([
                "x-webkit-deflate-frame",
                "permessage-deflate; client_max_window_bits=10"
            ])
            .as_deref(),
            Some(answer)
        );
        // A window limit below 15 for the server: declined, the next offer taken.
        assert_eq!(
            negotiate(["permessage-deflate; server_max_window_bits=10, permessage-deflate"])
                .as_deref(),
            Some(answer)
        );
        assert_eq!(
            negotiate(["permessage-deflate; server_max_window_bits=\"15\""]).as_deref(),
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15"
            )
        );
        for bad in [
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=08",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; unknown",
            "deflate-frame",
            "",
        ] {
            assert_eq!(negotiate([bad]), None, "{bad}");
        }
        assert_eq!(negotiate(std::iter::empty::<&str>()), None);
    }

    #[test]
    fn compression_round_trips_and_skips_small_payloads() {
        assert_eq!(compress(b"{\"op\":\"pong\"}"), None);
        let text = format!(
            r#"{{"op":"event","data":{{"text":"{}"}}}}"#,
            "hello ".repeat(50)
        );
        let packed = compress(text.as_bytes()).expect("compressible");
        assert!(packed.len() < text.len() / 4, "{} bytes", packed.len());
        assert_eq!(inflate_raw(&packed), text.as_bytes());
        // The compressor is reset between messages: the same input, the same output.
        assert_eq!(compress(text.as_bytes()), Some(packed));
    }

    #[test]
    fn inflates_compressed_messages_and_passes_the_rest_through() {
        let text = "subscribe ".repeat(40);
        let packed = compress(text.as_bytes()).expect("compressible");
        let mut inflate = Inflate::new(1 << 20);
        // A compressed message in two fragments with a ping between them, then an
        // uncompressed message, fed a byte at a time.
        let (a, b) = packed.split_at(packed.len() / 2);
        let ping = client_frame(0x9, true, false, b"p", [9, 8, 7, 6]);
        let plain = client_frame(0x1, true, false, b"plain", [1, 2, 3, 4]);
        let mut wire = client_frame(0x1, false, true, a, [1, 2, 3, 4]);
        wire.extend(&ping);
        wire.extend(client_frame(0x0, true, false, b, [5, 6, 7, 8]));
        wire.extend(&plain);
        for byte in &wire {
            inflate.feed(std::slice::from_ref(byte)).expect("valid");
        }
        let mut expected = ping.clone();
        expected.extend(client_frame(0x1, true, false, text.as_bytes(), [0; 4]));
        expected.extend(&plain);
        assert_eq!(drain(&mut inflate), expected);
        assert!(!inflate.has_ready());
        assert!(inflate.raw.capacity() == 0 && inflate.message.is_none());
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_limit() {
        // 10 MB of zeros compresses to ~10 KB.
        let zeros = vec![b'0'; 10 << 20];
        let mut c = Compress::new(Compression::best(), false);
        let mut packed = Vec::with_capacity(1 << 20);
        c.compress_vec(&zeros, &mut packed, FlushCompress::Sync)
            .expect("compress");
        assert!(packed.len() < 64 * 1024, "{}", packed.len());
        let wire = client_frame(0x1, true, true, &packed, [3, 1, 4, 1]);
        // Parsed without `feed` (which drops the message on refusal) to see what it held.
        let mut inflate = Inflate::new(1 << 20);
        let err = inflate
            .process(&mut wire.clone())
            .expect_err("over the limit");
        assert!(matches!(err, InflateError::TooBig(_)), "{err}");
        let capacity = inflate
            .message
            .as_ref()
            .map_or(0, |m| m.inflated.capacity());
        assert!(capacity <= (1 << 20) + 1, "{capacity}");
        // Through `feed`: refused, nothing kept, and every later read refused too.
        let mut inflate = Inflate::new(1 << 20);
        let err = inflate.feed(&wire).expect_err("over the limit");
        assert!(inflate.message.is_none() && inflate.raw.capacity() == 0);
        assert!(inflate.feed(b"\x81").is_err() && inflate.check().is_err());
        assert!(InflateError::is_too_big(&err.into()));
    }

    #[test]
    fn rfc_violations_are_refused() {
        let packed = compress("x".repeat(300).as_bytes()).expect("compressible");
        let cases: [(Vec<u8>, &str); 4] = [
            (
                client_frame(0x1, true, true, b"\xff\xff\xff", [1; 4]),
                "deflate data",
            ),
            (
                [
                    client_frame(0x1, false, true, &packed, [1; 4]),
                    client_frame(0x0, true, true, b"", [1; 4]),
                ]
                .concat(),
                "continuation",
            ),
            (
                [
                    client_frame(0x1, false, true, &packed, [1; 4]),
                    client_frame(0x1, true, false, b"x", [1; 4]),
                ]
                .concat(),
                "inside a fragmented",
            ),
            (
                {
                    let mut f = client_frame(0x1, true, true, &packed, [0; 4]);
                    f[1] &= 0x7f; // unmasked
                    f.drain(2..6);
                    f
                },
                "unmasked",
            ),
        ];
        for (wire, what) in cases {
            let err = Inflate::new(1 << 20).feed(&wire).expect_err(what);
            assert!(err.to_string().contains(what), "{err} / {what}");
        }
        // Without the extension tungstenite sees RSV1 as it is (and refuses it): the
        // filter is only installed when negotiated, which the server tests cover.
    }
}
