//! Why a piece of disk metadata could not be used.

/// Why metadata could not be read or trusted. Any of these makes the mapper send the whole
/// partition (or disk), with a warning that quotes the error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// Reading the disk failed.
    #[error("read error at byte {offset}: {message}")]
    Io {
        /// Where (relative to the region being parsed).
        offset: u64,
        /// The I/O error.
        message: String,
    },
    /// A read or a pointer reaches outside the partition or disk.
    #[error(
        "{what} points outside the partition (byte {offset}, length {len}, partition {size} bytes)"
    )]
    OutOfRange {
        /// What pointed there.
        what: &'static str,
        /// The offset asked for, relative to the region.
        offset: u64,
        /// The length asked for.
        len: u64,
        /// The region's size.
        size: u64,
    },
    /// A check failed: bad magic, bad checksum, counts that do not add up.
    #[error("{0}")]
    Corrupt(String),
    /// Valid metadata using a feature this version does not read.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// Shorthand for a [`MetaError::Corrupt`] with a formatted message.
#[macro_export]
macro_rules! corrupt {
    ($($arg:tt)*) => { $crate::MetaError::Corrupt(format!($($arg)*)) };
}
