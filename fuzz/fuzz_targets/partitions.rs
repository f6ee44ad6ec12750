//! A hostile disk: any bytes, through the partition-table readers (GPT, then MBR) alone.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    blockrep_blockmap::fuzzing::partitions(data);
});
