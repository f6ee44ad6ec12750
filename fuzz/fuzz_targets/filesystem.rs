//! A hostile partition: the first byte picks a filesystem, the rest is its metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    blockrep_blockmap::fuzzing::filesystem(data);
});
