//! Who a client is, and which clients may use this receiver and each of its disks.
//!
//! Mutual TLS proves a client holds a certificate from the client CA; any certificate of that
//! CA would do. An operator narrows it down with rules: `--allow-client RULE` for the
//! receiver, `--disk-client ID=RULE` for one disk. A rule is a name (matched against the
//! certificate's subject alternative DNS names and its common name) or `sha256:HEX`, the
//! SHA-256 of the certificate's SubjectPublicKeyInfo (64 hex digits, as `openssl x509 -pubkey
//! -noout | openssl pkey -pubin -outform der | sha256sum` prints it). Every client certificate
//! must also carry the clientAuth extended key usage.

use std::collections::BTreeMap;
use std::fmt;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::Error;

/// One allow rule: a certificate name, or the SHA-256 of its public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRule {
    /// A subject alternative DNS name or the common name, compared exactly.
    Name(String),
    /// The SHA-256 of the certificate's SubjectPublicKeyInfo (DER).
    Spki([u8; 32]),
}

impl ClientRule {
    /// Parses `NAME` or `sha256:HEX`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(hex) = s.strip_prefix("sha256:") {
            let hex = hex.replace(':', "");
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| {
                    hex.get(i..i + 2)
                        .and_then(|b| u8::from_str_radix(b, 16).ok())
                })
                .collect::<Option<Vec<u8>>>();
            return match bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()) {
                Some(digest) => Ok(Self::Spki(digest)),
                None => Err(format!(
                    "{s:?}: sha256: must be followed by the 64 hex digits of the SHA-256 of the \
                     certificate's public key"
                )),
            };
        }
        if s.is_empty() || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "{s:?}: a client rule is a certificate name (DNS name or common name) or \
                 sha256:HEX"
            ));
        }
        Ok(Self::Name(s.to_owned()))
    }
}

impl fmt::Display for ClientRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Spki(d) => write!(f, "sha256:{}", hex(d)),
        }
    }
}

/// Which clients may use the receiver and its disks. Empty lists allow every client of the
/// client CA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAccess {
    /// Clients that may use the receiver at all; empty: any.
    pub receiver: Vec<ClientRule>,
    /// Per disk id, the clients that may write or compare it; a disk not listed: any client
    /// the receiver allows.
    pub disks: BTreeMap<String, Vec<ClientRule>>,
}

impl ClientAccess {
    /// Whether `client` may use the receiver.
    pub(crate) fn allows(&self, client: &ClientIdentity) -> bool {
        self.receiver.is_empty() || self.receiver.iter().any(|r| client.matches(r))
    }

    /// Whether `client` may use disk `id`.
    pub(crate) fn allows_disk(&self, client: &ClientIdentity, id: &str) -> bool {
        self.allows(client)
            && self
                .disks
                .get(id)
                .is_none_or(|rules| rules.iter().any(|r| client.matches(r)))
    }
}

/// What a client certificate says about who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientIdentity {
    /// blake3 of the certificate's DER: the session journals' owner.
    pub fingerprint: [u8; 32],
    /// The SAN DNS names, then the subject's common names.
    pub names: Vec<String>,
    /// SHA-256 of the SubjectPublicKeyInfo.
    pub spki: [u8; 32],
}

impl ClientIdentity {
    /// Reads a client's end-entity certificate (already verified against the client CA by
    /// TLS). Refused when it cannot be parsed or lacks the clientAuth extended key usage.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        let refuse = |why: String| Error::ClientNotAllowed { why };
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| refuse(format!("its certificate cannot be read: {e}")))?;
        let client_auth = cert
            .extended_key_usage()
            .ok()
            .flatten()
            .is_some_and(|eku| eku.value.client_auth);
        let spki_der = cert.tbs_certificate.subject_pki.raw;
        let spki: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, spki_der)
            .as_ref()
            .try_into()
            .map_err(|_| refuse("SHA-256 is not 32 bytes".into()))?;
        let mut names: Vec<String> = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::DNSName(n) = name {
                    names.push((*n).to_owned());
                }
            }
        }
        for cn in cert.subject().iter_common_name() {
            if let Ok(cn) = cn.as_str() {
                names.push(cn.to_owned());
            }
        }
        let identity = Self {
            fingerprint: *blake3::hash(der).as_bytes(),
            names,
            spki,
        };
        if !client_auth {
            return Err(refuse(format!(
                "its certificate ({identity}) lacks the clientAuth extended key usage; issue \
                 client certificates for client authentication"
            )));
        }
        Ok(identity)
    }

    /// Whether this client matches `rule`.
    pub fn matches(&self, rule: &ClientRule) -> bool {
        match rule {
            ClientRule::Name(n) => self.names.iter().any(|m| m == n),
            ClientRule::Spki(d) => &self.spki == d,
        }
    }
}

impl fmt::Display for ClientIdentity {
    /// `names ..., sha256:HEX`, with control characters removed from the names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .names
            .iter()
            .map(|n| crate::error::sanitize(n))
            .collect();
        if names.is_empty() {
            write!(f, "no name, sha256:{}", hex(&self.spki))
        } else {
            write!(f, "{}, sha256:{}", names.join(", "), hex(&self.spki))
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair};

    fn cert(names: &[&str], eku: &[ExtendedKeyUsagePurpose]) -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = eku.to_vec();
        let cert = params.self_signed(&key).unwrap();
        (cert.der().to_vec(), key)
    }

    #[test]
    fn names_and_key_digest_are_read() {
        let (der, key) = cert(&["agent-7"], &[ExtendedKeyUsagePurpose::ClientAuth]);
        let id = ClientIdentity::from_der(&der).unwrap();
        assert!(id.names.contains(&"agent-7".to_owned()), "{id}");
        let spki = ring::digest::digest(&ring::digest::SHA256, &key.public_key_der());
        assert_eq!(id.spki.as_slice(), spki.as_ref());
        assert!(id.matches(&ClientRule::parse("agent-7").unwrap()));
        assert!(!id.matches(&ClientRule::parse("agent-8").unwrap()));
        let rule = ClientRule::parse(&format!("sha256:{}", hex(&id.spki))).unwrap();
        assert!(id.matches(&rule));
        assert_eq!(rule.to_string(), format!("sha256:{}", hex(&id.spki)));
    }

    #[test]
    fn rejects_a_certificate_without_client_auth() {
        for eku in [&[][..], &[ExtendedKeyUsagePurpose::ServerAuth][..]] {
            let (der, _) = cert(&["agent-7"], eku);
            let e = ClientIdentity::from_der(&der).unwrap_err();
            assert_eq!(e.code(), "SMS.0304");
            assert!(e.to_string().contains("clientAuth"), "{e}");
        }
    }

    #[test]
    fn rejects_bad_rules() {
        for bad in [
            "",
            "a b",
            "sha256:12",
            "sha256:zz",
            &format!("sha256:{}", "0".repeat(66)),
        ] {
            assert!(ClientRule::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ClientRule::parse(&format!("sha256:{}", "ab".repeat(32))).is_ok());
    }

    #[test]
    fn disk_rules_narrow_the_receiver_rules() {
        let (der, _) = cert(&["agent-7"], &[ExtendedKeyUsagePurpose::ClientAuth]);
        let id = ClientIdentity::from_der(&der).unwrap();
        let rule = |s: &str| ClientRule::parse(s).unwrap();
        let mut access = ClientAccess::default();
        assert!(access.allows(&id) && access.allows_disk(&id, "d0"));
        access.disks.insert("d0".into(), vec![rule("agent-8")]);
        assert!(access.allows_disk(&id, "d1") && !access.allows_disk(&id, "d0"));
        access.receiver = vec![rule("agent-9")];
        assert!(!access.allows(&id) && !access.allows_disk(&id, "d1"));
    }
}
