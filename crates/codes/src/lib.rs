//! The migration service's error codes (`SMS.xxxx`) that blockrep reports, in one place.
//!
//! Every crate of the workspace takes its codes from here, so a code is written once; the
//! error tables of README.md, docs/PROTOCOL.md and docs/OPERATIONS.md list exactly [`ALL`]
//! (tests/trust_codes.rs checks it). The codes are the service's: they must not change, and a
//! new one is added here, to [`ALL`] and to those tables.
//!
//! This crate holds strings only: which error maps to which code is decided by each crate's
//! error type (`code()`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Cannot reach the target on its port (TCP connect failed).
pub const CONNECT: &str = "SMS.1807";
/// TLS authentication failed (handshake or peer certificate rejected; also a session of
/// another client's certificate).
pub const TLS: &str = "SMS.0304";
/// A certificate or key cannot be loaded.
pub const CERTIFICATE: &str = "SMS.3301";
/// Data transmission failed (connection lost or timed out, receiver busy, unusable
/// configuration); the only code a sender retries.
pub const TRANSMISSION: &str = "SMS.1908";
/// Failed to receive data (the peer broke the protocol, or a chunk's length or digest did not
/// match).
pub const RECEIVE: &str = "SMS.2011";
/// Failed to write target disks.
pub const WRITE: &str = "SMS.2007";
/// Not enough space on the target.
pub const NO_SPACE: &str = "SMS.0519";
/// Failed to open a disk (also: a disk id the receiver does not have, a disk in use).
pub const OPEN_DISK: &str = "SMS.2013";
/// Disk sizes do not match (a target smaller than its source; a session resumed with other
/// disks).
pub const DISK_SIZE: &str = "SMS.1504";
/// The consistency check could not be done.
pub const VERIFY: &str = "SMS.1511";
/// Decompression failed.
pub const DECOMPRESS: &str = "SMS.2009";
/// Failed to read the source disk.
pub const READ_SOURCE: &str = "SMS.1905";
/// The speed-limit rules are invalid (a bad time, speed or threshold, overlapping windows).
pub const RULES: &str = "SMS.6405";

/// Every code above with its meaning in a few words (the docs' tables say the same), in the
/// order the docs list them.
pub const ALL: &[(&str, &str)] = &[
    (CONNECT, "cannot connect to the target on its port"),
    (TLS, "TLS authentication failed"),
    (CERTIFICATE, "a certificate or key cannot be loaded"),
    (TRANSMISSION, "data transmission failed"),
    (RECEIVE, "failed to receive data"),
    (WRITE, "failed to write target disks"),
    (NO_SPACE, "not enough space on the target"),
    (OPEN_DISK, "failed to open a disk"),
    (DISK_SIZE, "disk sizes do not match"),
    (VERIFY, "the consistency check could not be done"),
    (DECOMPRESS, "decompression failed"),
    (READ_SOURCE, "failed to read the source disk"),
    (RULES, "the speed-limit rules are invalid"),
];

/// The meaning of `code`, if it is one of [`ALL`].
pub fn meaning(code: &str) -> Option<&'static str> {
    ALL.iter().find(|(c, _)| *c == code).map(|(_, m)| *m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_well_formed() {
        for (i, (code, meaning)) in ALL.iter().enumerate() {
            let digits = code.strip_prefix("SMS.").expect(code);
            assert!(
                digits.len() == 4 && digits.bytes().all(|b| b.is_ascii_digit()),
                "{code}"
            );
            assert!(!meaning.is_empty(), "{code}");
            assert!(
                ALL[..i].iter().all(|(c, _)| c != code),
                "{code} is listed twice"
            );
        }
        assert_eq!(meaning(RULES), Some("the speed-limit rules are invalid"));
        assert_eq!(meaning("SMS.0000"), None);
    }

    /// Every constant of this file is in ALL: a code added without a line there fails here.
    #[test]
    fn all_lists_every_constant() {
        let source = include_str!("lib.rs");
        let declared: Vec<&str> = source
            .lines()
            .filter_map(|l| l.strip_prefix("pub const "))
            .filter_map(|l| l.split_once(": &str = \""))
            .map(|(_, rest)| rest.split('"').next().unwrap())
            .collect();
        assert_eq!(declared.len(), ALL.len(), "{declared:?}");
        for code in declared {
            assert!(meaning(code).is_some(), "{code} is not in ALL");
        }
    }
}
