//! A hostile NTFS partition: the bytes after the first (a selector, ignored: the inputs are
//! those of the `filesystem` target) through the NTFS parsers.
#![no_main]

use blockrep_blockmap::fuzzing::{filesystem_family, FS_FAMILIES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_, family) = FS_FAMILIES
        .iter()
        .find(|(name, _)| *name == "ntfs")
        .expect("a family of that name");
    filesystem_family(family, data);
});
