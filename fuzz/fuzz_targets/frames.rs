//! A hostile sender: any bytes, decoded as frames and fed to a receiver session.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    blockrep_proto::fuzzing::receive(data);
});
