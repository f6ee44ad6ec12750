//! A hostile change file: native bitmap, dm-era block list or text extent list.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    blockrep_blockmap::fuzzing::bitmap(data);
});
