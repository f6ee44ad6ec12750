//! A hostile ext2/3/4 partition: the bytes after the first (a selector, ignored: the inputs are
//! those of the `filesystem` target) through the ext parser (as ext2, ext3 and ext4).
#![no_main]

use blockrep_blockmap::fuzzing::{filesystem_family, FS_FAMILIES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_, family) = FS_FAMILIES
        .iter()
        .find(|(name, _)| *name == "ext")
        .expect("a family of that name");
    filesystem_family(family, data);
});
