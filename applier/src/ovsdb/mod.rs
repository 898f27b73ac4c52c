//! A small OVSDB client (RFC 7047) over a unix socket: JSON-RPC framing, `transact`, and decoding
//! of the OVSDB value encodings this tool reads.

pub mod jsonrpc;
pub mod value;

pub use jsonrpc::{Connection, OvsdbError};
