//! A hostile chunk: any encoding, length, digest and payload, through decode and verify.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    blockrep_chunk::fuzzing::verify_chunk(data);
});
