//! JSON-RPC 1.0 over a stream, as OVSDB speaks it: no length prefix or delimiter, so messages are
//! framed by scanning for the end of each top-level JSON value. A reply may arrive in many reads,
//! or several messages in one; the scanner is incremental, so a large reply costs linear time.
//! One message may be at most [`MAX_MESSAGE`] bytes: a peer that sends more (a broken or hostile
//! server, or something else on the socket) is refused with [`OvsdbError::TooLarge`] once it
//! has sent that much, so memory stays bounded. The server's `echo` keep-alives are answered;
//! notifications are skipped. A message is decoded only as far as its envelope: a `transact`
//! result stays text ([`RawValue`]) until its reader decodes it into its own types.
//!
//! Over 500 lines with its tests, which are half of it: the framer's and the connection's edge
//! cases (split, concatenated, oversized, endless and escaped messages, keep-alives) sit next
//! to the scanner they test.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    #[error("cannot connect to ovsdb-server at {path}: {source} (is ovsdb-server running? --ovsdb unix:PATH selects another socket)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to ovsdb-server: {0}")]
    Io(#[from] std::io::Error),
    #[error("ovsdb-server did not answer {what} within {ms} ms")]
    Timeout { what: String, ms: u128 },
    #[error("ovsdb-server closed the connection during {0}")]
    Closed(String),
    #[error("malformed message from ovsdb-server: {0}")]
    Protocol(String),
    #[error("ovsdb-server sent a message of more than {limit} bytes during {during}, refused; no reply this tool asks for comes near that (10,000 rows take a few MiB): is --ovsdb the socket of ovsdb-server?")]
    TooLarge { limit: usize, during: String },
    #[error("ovsdb-server refused {method}: {error}")]
    Rpc { method: String, error: Value },
    #[error("OVSDB transaction failed at operation {index} ({op}): {error}{details}")]
    Txn {
        index: usize,
        op: String,
        error: String,
        details: String,
    },
}

/// Largest message accepted from ovsdb-server: 64 MiB, ten times a read of 10,000 rows.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Where the next complete top-level value ends, scanning incrementally.
#[derive(Debug, Clone)]
pub struct Framer {
    buf: Vec<u8>,
    scanned: usize,
    /// Where the message being scanned starts in `buf` (after whitespace between messages).
    start: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    started: bool,
    max: usize,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::with_limit(MAX_MESSAGE)
    }
}

impl Framer {
    /// A framer refusing messages over `max` bytes.
    pub fn with_limit(max: usize) -> Self {
        Framer {
            buf: Vec::new(),
            scanned: 0,
            start: 0,
            depth: 0,
            in_string: false,
            escaped: false,
            started: false,
            max,
        }
    }

    /// Adds bytes as they arrive. Call [`Framer::next_message`] after each push: that is where
    /// the size limit is enforced.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held: the part of a message received so far, and any messages after it.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn too_large(&self) -> OvsdbError {
        OvsdbError::TooLarge {
            limit: self.max,
            during: "a read".into(),
        }
    }

    /// The next complete message, parsed (tests; the connection uses [`Framer::next_raw`]).
    pub fn next_message(&mut self) -> Result<Option<Value>, OvsdbError> {
        match self.next_raw()? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| OvsdbError::Protocol(e.to_string())),
            None => Ok(None),
        }
    }

    /// The next complete message's bytes, if the buffer holds one; an error once the message
    /// being received is over the limit.
    pub fn next_raw(&mut self) -> Result<Option<Vec<u8>>, OvsdbError> {
        let value = self.scan()?;
        if value.is_none() {
            if !self.started {
                // Only whitespace between messages so far: nothing worth keeping.
                self.buf.clear();
                self.scanned = 0;
            } else if self.buf.len() - self.start > self.max {
                return Err(self.too_large());
            }
        }
        Ok(value)
    }

    fn scan(&mut self) -> Result<Option<Vec<u8>>, OvsdbError> {
        // The state in locals for the loop, written back once: kept in `self`, it was loaded
        // and stored around every byte (a read of 1,000 tunnels is half a megabyte).
        let buf = &self.buf[..];
        let mut i = self.scanned;
        let (mut depth, mut in_string, mut escaped) = (self.depth, self.in_string, self.escaped);
        let (mut started, mut start) = (self.started, self.start);
        let mut end = None;
        while i < buf.len() {
            if in_string {
                if escaped {
                    escaped = false;
                    i += 1;
                    continue;
                }
                // Most of a reply is strings: skip to the next quote or backslash in one
                // search instead of a turn of this loop per byte.
                match memchr::memchr2(b'"', b'\\', &buf[i..]) {
                    Some(n) => {
                        i += n;
                        if buf[i] == b'"' {
                            in_string = false;
                        } else {
                            escaped = true;
                        }
                        i += 1;
                    }
                    None => i = buf.len(),
                }
                continue;
            }
            let b = buf[i];
            i += 1;
            match b {
                b'"' if started => in_string = true,
                b'{' | b'[' => {
                    if !started {
                        start = i - 1;
                    }
                    started = true;
                    depth += 1;
                }
                b'}' | b']' if started => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                b' ' | b'\t' | b'\r' | b'\n' if !started => {}
                _ if !started => {
                    return Err(OvsdbError::Protocol(format!(
                        "unexpected byte {b:#04x} between messages"
                    )))
                }
                _ => {}
            }
        }
        (self.depth, self.in_string, self.escaped) = (depth, in_string, escaped);
        (self.started, self.start) = (started, start);
        self.scanned = i;
        let Some(end) = end else {
            return Ok(None);
        };
        if end - self.start > self.max {
            return Err(self.too_large());
        }
        // The message moves out; only what followed it is copied.
        let rest = self.buf.split_off(end);
        let message = std::mem::replace(&mut self.buf, rest);
        self.scanned = 0;
        self.started = false;
        Ok(Some(message))
    }
}

/// One message, as far as [`Connection::envelope`] reads it.
enum Message<'a> {
    /// The reply to the request waited for: its result, if any.
    Ours(Option<&'a RawValue>),
    /// An echo request (answered), a notification, or a reply nobody waits for.
    Other,
}

/// One connection to ovsdb-server.
pub struct Connection {
    stream: UnixStream,
    framer: Framer,
    next_id: u64,
    timeout: Duration,
}

impl Connection {
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, OvsdbError> {
        let stream = UnixStream::connect(path).map_err(|source| OvsdbError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::from_stream(stream, timeout))
    }

    pub fn from_stream(stream: UnixStream, timeout: Duration) -> Self {
        Connection {
            stream,
            framer: Framer::default(),
            next_id: 0,
            timeout,
        }
    }

    /// Sends a request and waits for its reply, answering echo requests meanwhile.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, OvsdbError> {
        let id = self.request(method, params)?;
        let raw = self.reply(id, method)?;
        serde_json::from_str(raw.get()).map_err(|e| OvsdbError::Protocol(e.to_string()))
    }

    /// Sends a request without waiting for its reply ([`Connection::reply`] takes it): the
    /// server works on it while the caller does something else. Returns the request's id.
    pub fn request(&mut self, method: &str, params: Value) -> Result<u64, OvsdbError> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"method": method, "params": params, "id": id}))?;
        Ok(id)
    }

    /// The result of request `id`, left as text; answers echo requests and skips other
    /// messages (notifications, replies to requests nobody waits for any more) meanwhile.
    pub fn reply(&mut self, id: u64, method: &str) -> Result<Box<RawValue>, OvsdbError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let bytes = self.receive(method, deadline)?;
            if let Message::Ours(result) = self.envelope(&bytes, id, method)? {
                return Ok(match result {
                    Some(r) => r.to_owned(),
                    None => RawValue::from_string("null".into()).expect("valid JSON"),
                });
            }
        }
    }

    /// [`Connection::reply`] with the result decoded as a `T` in the same pass as the envelope:
    /// a large reply (the read of every row) is parsed once, not validated as text first and
    /// decoded after. `Ok(Err(e))` is a reply to `id` whose result is no `T`.
    pub fn reply_as<T: DeserializeOwned>(
        &mut self,
        id: u64,
        method: &str,
    ) -> Result<Result<T, serde_json::Error>, OvsdbError> {
        /// A reply, its result typed. An RPC error has a null result, which no `T` the callers
        /// ask for decodes from: it goes the way of every other message, as does anything with
        /// a `method` (a request or notification, whatever else it holds).
        #[derive(Deserialize)]
        struct Reply<T> {
            id: u64,
            result: T,
            #[serde(default)]
            error: Value,
            #[serde(default)]
            method: Option<serde::de::IgnoredAny>,
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            let bytes = self.receive(method, deadline)?;
            // Checked as UTF-8 once, whole: read from a `str`, serde_json does not check each
            // of the tens of thousands of strings of a large reply again.
            let typed = match std::str::from_utf8(&bytes) {
                Ok(text) => serde_json::from_str::<Reply<T>>(text),
                Err(_) => serde_json::from_slice::<Reply<T>>(&bytes),
            };
            match &typed {
                Ok(reply) if reply.method.is_some() => {}
                Ok(reply) if reply.id != id => continue, // a stale reply of the same shape
                Ok(reply) if reply.error.is_null() => return Ok(typed.map(|r| r.result)),
                _ => {}
            }
            // Anything else is read as any message is: an echo, a notification, an RPC error.
            if let Message::Ours(_) = self.envelope(&bytes, id, method)? {
                return Ok(typed.map(|r| r.result));
            }
        }
    }

    /// Reads one message as far as its envelope: answers an echo request, tells a reply to
    /// `id` from every other message, and turns an RPC error into [`OvsdbError::Rpc`].
    fn envelope<'a>(
        &mut self,
        bytes: &'a [u8],
        id: u64,
        method: &str,
    ) -> Result<Message<'a>, OvsdbError> {
        /// What every message is read as first; `result` stays text.
        #[derive(Deserialize)]
        struct Envelope<'a> {
            #[serde(default)]
            method: Option<String>,
            #[serde(default)]
            params: Value,
            #[serde(default)]
            id: Value,
            #[serde(default)]
            error: Value,
            #[serde(borrow, default)]
            result: Option<&'a RawValue>,
        }
        let msg: Envelope = serde_json::from_slice(bytes)
            .map_err(|e| OvsdbError::Protocol(format!("a message that is no JSON-RPC: {e}")))?;
        if msg.method.as_deref() == Some("echo") {
            let reply = json!({"result": msg.params, "error": null, "id": msg.id});
            self.send(&reply)?;
            return Ok(Message::Other);
        }
        if msg.id != json!(id) {
            return Ok(Message::Other); // a notification or a stale reply
        }
        if !msg.error.is_null() {
            return Err(OvsdbError::Rpc {
                method: method.into(),
                error: msg.error,
            });
        }
        Ok(Message::Ours(msg.result))
    }

    /// Runs `ops` as one transaction on `Open_vSwitch` and returns each operation's result;
    /// any failed operation fails the whole call, naming the operation.
    pub fn transact(&mut self, ops: &[Value]) -> Result<Vec<Value>, OvsdbError> {
        self.transact_in("Open_vSwitch", ops)
    }

    /// [`Connection::transact`] on database `db` (e.g. `OVN_Northbound`).
    pub fn transact_in(&mut self, db: &str, ops: &[Value]) -> Result<Vec<Value>, OvsdbError> {
        let mut params = vec![json!(db)];
        params.extend_from_slice(ops);
        let id = self.request("transact", Value::Array(params))?;
        let raw = self.reply(id, "transact")?;
        let results: Vec<Value> = serde_json::from_str(raw.get())
            .map_err(|e| OvsdbError::Protocol(format!("transact result is not an array: {e}")))?;
        for (index, r) in results.iter().enumerate() {
            if let Some(error) = r.get("error").and_then(Value::as_str) {
                let details = r.get("details").and_then(Value::as_str);
                return Err(op_failed(ops, index, error, details));
            }
        }
        Ok(results)
    }

    /// Sends `ops` as one transaction, for [`Connection::reply`] to take the results as text:
    /// a reader that decodes them into its own types checks each operation's outcome itself
    /// (with [`op_failed`]).
    pub fn transact_request(&mut self, ops: &[Value]) -> Result<u64, OvsdbError> {
        let mut params = vec![json!("Open_vSwitch")];
        params.extend_from_slice(ops);
        self.request("transact", Value::Array(params))
    }

    fn send(&mut self, msg: &Value) -> Result<(), OvsdbError> {
        let bytes = serde_json::to_vec(msg).expect("JSON serializes");
        self.stream.set_write_timeout(Some(self.timeout))?;
        self.stream.write_all(&bytes)?;
        Ok(())
    }

    fn receive(&mut self, what: &str, deadline: Instant) -> Result<Vec<u8>, OvsdbError> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let next = self.framer.next_raw().map_err(|e| match e {
                OvsdbError::TooLarge { limit, .. } => OvsdbError::TooLarge {
                    limit,
                    during: what.into(),
                },
                e => e,
            })?;
            if let Some(msg) = next {
                return Ok(msg);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(OvsdbError::Timeout {
                    what: what.into(),
                    ms: self.timeout.as_millis(),
                });
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(OvsdbError::Closed(what.into())),
                Ok(n) => self.framer.push(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Operation `index` of `ops` failed with `error` (and `details`): the error naming it (the
/// commit, past the last operation).
pub fn op_failed(ops: &[Value], index: usize, error: &str, details: Option<&str>) -> OvsdbError {
    OvsdbError::Txn {
        index,
        op: ops
            .get(index)
            .map(describe_op)
            .unwrap_or_else(|| "commit".into()),
        error: error.into(),
        details: details.map(|d| format!(": {d}")).unwrap_or_default(),
    }
}

/// A short description of an operation for error messages. Never includes row contents, which
/// may hold PSKs.
fn describe_op(op: &Value) -> String {
    let kind = op["op"].as_str().unwrap_or("?");
    let table = op["table"].as_str().unwrap_or("");
    let name = op["row"]["name"]
        .as_str()
        .map(|n| format!(" {n}"))
        .unwrap_or_default();
    format!("{kind} {table}{name}").trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framer_splits_concatenated_messages_and_waits_for_partial_ones() {
        let mut f = Framer::default();
        f.push(br#"{"id":1,"s":"a}]{\"b"} [1,[2]]{"id""#);
        assert_eq!(
            f.next_message().unwrap(),
            Some(json!({"id":1,"s":"a}]{\"b"}))
        );
        assert_eq!(f.next_message().unwrap(), Some(json!([1, [2]])));
        assert_eq!(f.next_message().unwrap(), None);
        f.push(br#":2}"#);
        assert_eq!(f.next_message().unwrap(), Some(json!({"id":2})));
    }

    #[test]
    fn framer_handles_byte_at_a_time_delivery() {
        let msg = json!({"result":[{"rows":[{"name":"x\\\"y","n":[1,2,{"k":"}"}]}]}],"id":7});
        let bytes = serde_json::to_vec(&msg).unwrap();
        let mut f = Framer::default();
        for (i, b) in bytes.iter().enumerate() {
            f.push(&[*b]);
            let got = f.next_message().unwrap();
            assert_eq!(got.is_some(), i == bytes.len() - 1, "at byte {i}");
            if let Some(v) = got {
                assert_eq!(v, msg);
            }
        }
    }

    /// The search through strings stops at a backslash split from what it escapes.
    #[test]
    fn framer_keeps_an_escape_split_across_reads() {
        let mut f = Framer::default();
        f.push(br#"{"a":"x}]\"#);
        assert_eq!(f.next_message().unwrap(), None);
        f.push(br#""y\\"}["z"]"#);
        assert_eq!(f.next_message().unwrap(), Some(json!({"a": "x}]\"y\\"})));
        assert_eq!(f.next_message().unwrap(), Some(json!(["z"])));
    }

    #[test]
    fn framer_rejects_garbage_between_messages() {
        let mut f = Framer::default();
        f.push(b"x{}");
        assert!(f.next_message().is_err());
    }

    /// A fake server on a socket pair: answers an echo first, then sends a large reply in small
    /// writes with pauses, as a loaded ovsdb-server may.
    #[test]
    fn call_answers_echo_and_reassembles_a_large_reply_from_many_reads() {
        let (client, mut server) = UnixStream::pair().unwrap();
        let big: Vec<Value> = (0..5000)
            .map(|i| json!({"uuid": ["uuid", format!("{i:08}")]}))
            .collect();
        let expected = big.clone();
        let t = std::thread::spawn(move || {
            let mut framer = Framer::default();
            let mut buf = [0u8; 4096];
            let request = loop {
                let n = server.read(&mut buf).unwrap();
                framer.push(&buf[..n]);
                if let Some(m) = framer.next_message().unwrap() {
                    break m;
                }
            };
            server
                .write_all(br#"{"method":"echo","params":["ka"],"id":"echo"}"#)
                .unwrap();
            let echo_reply = loop {
                let n = server.read(&mut buf).unwrap();
                framer.push(&buf[..n]);
                if let Some(m) = framer.next_message().unwrap() {
                    break m;
                }
            };
            let reply =
                serde_json::to_vec(&json!({"id": request["id"], "error": null, "result": big}))
                    .unwrap();
            for chunk in reply.chunks(997) {
                server.write_all(chunk).unwrap();
                std::thread::sleep(Duration::from_micros(50));
            }
            echo_reply
        });
        let mut conn = Connection::from_stream(client, Duration::from_secs(10));
        let result = conn.call("transact", json!(["Open_vSwitch"])).unwrap();
        assert_eq!(result, Value::Array(expected));
        let echo_reply = t.join().unwrap();
        assert_eq!(
            echo_reply,
            json!({"result": ["ka"], "error": null, "id": "echo"})
        );
    }

    #[test]
    fn a_silent_server_times_out_with_a_clear_message() {
        let (client, _server) = UnixStream::pair().unwrap();
        let mut conn = Connection::from_stream(client, Duration::from_millis(200));
        let err = conn.call("transact", json!([])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ovsdb-server did not answer transact within 200 ms"
        );
    }

    #[test]
    fn failed_operations_are_named_without_row_contents() {
        let (client, mut server) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let _ = server.read(&mut buf).unwrap();
            server
                .write_all(br#"{"id":1,"error":null,"result":[{},{"error":"constraint violation","details":"duplicate name"}]}"#)
                .unwrap();
        });
        let mut conn = Connection::from_stream(client, Duration::from_secs(5));
        let ops = [
            json!({"op":"wait","table":"Bridge"}),
            json!({"op":"insert","table":"Interface","row":{"name":"gre-1","options":["map",[["psk","SECRET"]]]}}),
        ];
        let err = conn.transact(&ops).unwrap_err().to_string();
        t.join().unwrap();
        assert_eq!(err, "OVSDB transaction failed at operation 1 (insert Interface gre-1): constraint violation: duplicate name");
        assert!(!err.contains("SECRET"));
    }

    #[test]
    fn framer_refuses_a_message_over_its_limit_and_accepts_one_at_it() {
        let mut f = Framer::with_limit(16);
        f.push(b"  [\"0123456789ab\"]"); // 16 bytes after the whitespace
        assert_eq!(f.next_message().unwrap(), Some(json!(["0123456789ab"])));
        f.push(b"[\"0123456789abc\"]");
        assert!(matches!(
            f.next_message(),
            Err(OvsdbError::TooLarge { limit: 16, .. })
        ));
        // An unfinished one is refused as soon as it is over the limit.
        let mut f = Framer::with_limit(16);
        f.push(b"{\"a\":");
        assert_eq!(f.next_message().unwrap(), None);
        f.push(&[b' '; 12]);
        assert!(matches!(
            f.next_message(),
            Err(OvsdbError::TooLarge { limit: 16, .. })
        ));
    }

    #[test]
    fn whitespace_between_messages_is_not_kept() {
        let mut f = Framer::with_limit(16);
        for _ in 0..1000 {
            f.push(&[b'\n'; 1024]);
            assert_eq!(f.next_message().unwrap(), None);
        }
        assert_eq!(f.buffered(), 0);
        f.push(b"[1]");
        assert_eq!(f.next_message().unwrap(), Some(json!([1])));
    }

    /// A peer that answers with a message that never ends: refused at the limit, naming the
    /// call, with the framer holding no more than the limit and one read.
    #[test]
    fn an_endless_reply_is_refused_at_the_limit_with_bounded_memory() {
        let (client, mut server) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let _ = server.read(&mut buf).unwrap();
            server
                .write_all(br#"{"id":1,"error":null,"result":["#)
                .unwrap();
            let chunk = br#"{"uuid":["uuid","0"]},"#.repeat(3000);
            let mut sent = 0usize;
            // Until the client hangs up.
            while server.write_all(&chunk).is_ok() {
                sent += chunk.len();
            }
            sent
        });
        let mut conn = Connection::from_stream(client, Duration::from_secs(60));
        let err = conn.call("transact", json!(["Open_vSwitch"])).unwrap_err();
        assert!(
            matches!(&err, OvsdbError::TooLarge { limit: MAX_MESSAGE, during } if during == "transact"),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains("more than 67108864 bytes during transact"));
        assert!(conn.framer.buffered() <= MAX_MESSAGE + 64 * 1024);
        drop(conn);
        let sent = peer.join().unwrap();
        assert!(sent >= MAX_MESSAGE, "the peer sent only {sent} bytes");
    }

    /// A typed reply is read in one pass, and everything `reply` tells apart still is: a
    /// keep-alive is answered, a stale reply of the same shape and a notification are skipped,
    /// a result of another shape is the caller's decode error, an RPC error is `Rpc`.
    #[test]
    fn reply_as_decodes_the_result_and_reads_other_messages_as_reply_does() {
        let (client, mut server) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            let mut framer = Framer::default();
            let mut next = |server: &mut UnixStream| loop {
                if let Some(m) = framer.next_message().unwrap() {
                    break m;
                }
                let mut buf = [0u8; 4096];
                let n = server.read(&mut buf).unwrap();
                framer.push(&buf[..n]);
            };
            let _ = next(&mut server); // request 1
            server
                .write_all(br#"{"id":0,"error":null,"result":[9]}{"method":"update","params":[],"id":null}{"method":"echo","params":["k"],"id":"echo"}{"method":"echo","params":["k2"],"id":1,"result":[7],"error":null}"#)
                .unwrap();
            // The second echo carries the awaited id and a result of the awaited shape: it is
            // still an echo, answered, and not taken for the reply.
            let echo = (next(&mut server), next(&mut server));
            server
                .write_all(br#"{"id":1,"error":null,"result":[1,2]}"#)
                .unwrap();
            let _ = next(&mut server); // request 2
            server
                .write_all(br#"{"id":2,"error":null,"result":{"not":"a list"}}"#)
                .unwrap();
            let _ = next(&mut server); // request 3
            server
                .write_all(br#"{"id":3,"error":"unknown database","result":null}"#)
                .unwrap();
            echo
        });
        let mut conn = Connection::from_stream(client, Duration::from_secs(5));
        let id = conn.request("transact", json!(["Open_vSwitch"])).unwrap();
        let got: Vec<u32> = conn.reply_as(id, "transact").unwrap().unwrap();
        assert_eq!(got, [1, 2]);
        let id = conn.request("transact", json!(["Open_vSwitch"])).unwrap();
        let e = conn
            .reply_as::<Vec<u32>>(id, "transact")
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("expected a sequence"), "{e}");
        let id = conn.request("transact", json!(["Nope"])).unwrap();
        let e = conn.reply_as::<Vec<u32>>(id, "transact").unwrap_err();
        assert_eq!(
            e.to_string(),
            "ovsdb-server refused transact: \"unknown database\""
        );
        let echo = peer.join().unwrap();
        assert_eq!(
            echo.0,
            json!({"result": ["k"], "error": null, "id": "echo"})
        );
        assert_eq!(echo.1, json!({"result": ["k2"], "error": null, "id": 1}));
    }
}
