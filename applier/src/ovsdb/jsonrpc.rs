//! JSON-RPC 1.0 over a stream, as OVSDB speaks it: no length prefix or delimiter, so messages are
//! framed by scanning for the end of each top-level JSON value. A reply may arrive in many reads,
//! or several messages in one; the scanner is incremental, so a large reply costs linear time.
//! The server's `echo` keep-alives are answered; notifications are skipped.

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

/// Where the next complete top-level value ends, scanning incrementally.
#[derive(Debug, Default, Clone)]
pub struct Framer {
    buf: Vec<u8>,
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    started: bool,
}

impl Framer {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, if the buffer holds one.
    pub fn next_message(&mut self) -> Result<Option<Value>, OvsdbError> {
        while self.scanned < self.buf.len() {
            let b = self.buf[self.scanned];
            self.scanned += 1;
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' if self.started => self.in_string = true,
                b'{' | b'[' => {
                    self.started = true;
                    self.depth += 1;
                }
                b'}' | b']' if self.started => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let end = self.scanned;
                        let value = serde_json::from_slice(&self.buf[..end])
                            .map_err(|e| OvsdbError::Protocol(e.to_string()));
                        self.buf.drain(..end);
                        self.scanned = 0;
                        self.started = false;
                        return value.map(Some);
                    }
                }
                b' ' | b'\t' | b'\r' | b'\n' if !self.started => {}
                _ if !self.started => {
                    return Err(OvsdbError::Protocol(format!(
                        "unexpected byte {b:#04x} between messages"
                    )))
                }
                _ => {}
            }
        }
        Ok(None)
    }
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
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"method": method, "params": params, "id": id}))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let msg = self.receive(method, deadline)?;
            if msg.get("method").and_then(Value::as_str) == Some("echo") {
                let reply = json!({"result": msg["params"], "error": null, "id": msg["id"]});
                self.send(&reply)?;
                continue;
            }
            if msg.get("id") != Some(&json!(id)) {
                continue; // a notification or a stale reply
            }
            match msg.get("error") {
                Some(Value::Null) | None => {}
                Some(error) => {
                    return Err(OvsdbError::Rpc {
                        method: method.into(),
                        error: error.clone(),
                    })
                }
            }
            return Ok(msg.get("result").cloned().unwrap_or(Value::Null));
        }
    }

    /// Runs `ops` as one transaction on `Open_vSwitch` and returns each operation's result;
    /// any failed operation fails the whole call, naming the operation.
    pub fn transact(&mut self, ops: &[Value]) -> Result<Vec<Value>, OvsdbError> {
        let mut params = vec![json!("Open_vSwitch")];
        params.extend_from_slice(ops);
        let result = self.call("transact", Value::Array(params))?;
        let results = result
            .as_array()
            .ok_or_else(|| OvsdbError::Protocol("transact result is not an array".into()))?;
        for (index, r) in results.iter().enumerate() {
            if let Some(error) = r.get("error").and_then(Value::as_str) {
                let details = r
                    .get("details")
                    .and_then(Value::as_str)
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                let op = ops
                    .get(index)
                    .map(describe_op)
                    .unwrap_or_else(|| "commit".into());
                return Err(OvsdbError::Txn {
                    index,
                    op,
                    error: error.into(),
                    details,
                });
            }
        }
        Ok(results.clone())
    }

    fn send(&mut self, msg: &Value) -> Result<(), OvsdbError> {
        let bytes = serde_json::to_vec(msg).expect("JSON serializes");
        self.stream.set_write_timeout(Some(self.timeout))?;
        self.stream.write_all(&bytes)?;
        Ok(())
    }

    fn receive(&mut self, what: &str, deadline: Instant) -> Result<Value, OvsdbError> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(msg) = self.framer.next_message()? {
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
}
