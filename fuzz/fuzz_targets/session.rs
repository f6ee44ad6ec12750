//! Two sessions talking through in-memory queues: any bytes, read as driver calls, deliveries
//! and attacks on the queues (`Op`s), with the session invariants checked after each.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| blockrep_proto::fuzzing::session(data));
