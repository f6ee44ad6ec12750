//! The block-device ioctls this crate uses, wrapped safely. The only `unsafe` in the crate.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

// The kernel defines BLKGETSIZE64 as _IOR(0x12, 114, size_t) but always writes a u64: the
// request number encodes size_t's size, the argument is a u64 (linux/fs.h).
nix::ioctl_read_bad!(
    blkgetsize64_raw,
    nix::request_code_read!(0x12, 114, std::mem::size_of::<libc::size_t>()),
    u64
);

// BLKZEROOUT is _IO(0x12, 127) and takes a pointer to `u64 range[2]` = {start, length}.
nix::ioctl_write_ptr_bad!(blkzeroout_raw, nix::request_code_none!(0x12, 127), [u64; 2]);

/// The size in bytes of the block device open as `file`.
pub(crate) fn blkgetsize64(file: &File) -> io::Result<u64> {
    let mut size = 0u64;
    // SAFETY: the fd is open for the lifetime of `file`, and `size` is a valid, writable u64
    // that the kernel fills and that outlives the call.
    unsafe { blkgetsize64_raw(file.as_raw_fd(), &mut size) }?;
    Ok(size)
}

/// Zeroes `len` bytes at `offset` of the block device open as `file`. Both must be multiples of
/// 512 and inside the device, or the kernel answers EINVAL.
pub(crate) fn blkzeroout(file: &File, offset: u64, len: u64) -> nix::Result<()> {
    let range = [offset, len];
    // SAFETY: the fd is open for the lifetime of `file`, and `range` is a valid [u64; 2] that
    // the kernel only reads and that outlives the call.
    unsafe { blkzeroout_raw(file.as_raw_fd(), &range) }?;
    Ok(())
}
