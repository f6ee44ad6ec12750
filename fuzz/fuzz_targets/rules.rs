//! A hostile speed-limit setting: any bytes, as the JSON rules or the shorthand.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    blockrep_rate::fuzzing::rules(data);
});
