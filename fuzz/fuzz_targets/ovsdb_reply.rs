//! Bytes from a (hostile or broken) ovsdb-server through the JSON-RPC framer and the decoding of
//! the rows the applier reads: errors, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut framer = applier::ovsdb::jsonrpc::Framer::default();
    for chunk in data.chunks(7) {
        framer.push(chunk);
        while let Ok(Some(msg)) = framer.next_message() {
            if let Some(results) = msg.get("result").and_then(|r| r.as_array()) {
                let _ = applier::ovs::Live::from_results(results);
            }
        }
    }
});
