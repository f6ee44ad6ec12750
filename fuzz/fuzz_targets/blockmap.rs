//! A hostile disk: any bytes, as a whole disk, through the partition tables and every
//! filesystem's allocation metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    blockrep_blockmap::fuzzing::map_disk(data);
});
