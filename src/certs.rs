//! `blockrep certs`: a CA, a server and a client certificate, for trying blockrep out.
//!
//! Production deployments use the migration service's own PKI; these are for tests, the demo
//! and first steps. Keys are ECDSA P-256.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::Error;

/// A certificate and its key, in PEM.
#[derive(Clone)]
pub struct PemPair {
    /// The certificate.
    pub cert: String,
    /// The private key (PKCS#8).
    pub key: String,
}

/// A CA and the server and client certificates it issued.
#[derive(Clone)]
pub struct TestPki {
    /// The CA that issued both others.
    pub ca: PemPair,
    /// The receiver's certificate, valid for `localhost`, `127.0.0.1`, `::1` and the names given.
    pub server: PemPair,
    /// The sender's (agent's) client certificate.
    pub client: PemPair,
}

fn rcgen_err(e: rcgen::Error) -> Error {
    Error::Config(format!("cannot generate certificates: {e}"))
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "blockrep");
    dn.push(DnType::CommonName, cn);
    dn
}

fn leaf(
    names: Vec<String>,
    cn: &str,
    usage: ExtendedKeyUsagePurpose,
    ca: &Certificate,
    ca_key: &KeyPair,
) -> Result<PemPair, Error> {
    let key = KeyPair::generate().map_err(rcgen_err)?;
    let mut params = CertificateParams::new(names).map_err(rcgen_err)?;
    params.distinguished_name = name(cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, ca, ca_key).map_err(rcgen_err)?;
    Ok(PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Generates a fresh CA, server and client. `server_names` are extra DNS names or IP
/// addresses for the server certificate.
pub fn generate(server_names: &[String]) -> Result<TestPki, Error> {
    let ca_key = KeyPair::generate().map_err(rcgen_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err)?;
    params.distinguished_name = name("blockrep test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = params.self_signed(&ca_key).map_err(rcgen_err)?;
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    names.extend(server_names.iter().cloned());
    let server = leaf(
        names,
        "blockrep-receiver",
        ExtendedKeyUsagePurpose::ServerAuth,
        &ca,
        &ca_key,
    )?;
    let client = leaf(
        Vec::new(),
        "blockrep-agent",
        ExtendedKeyUsagePurpose::ClientAuth,
        &ca,
        &ca_key,
    )?;
    Ok(TestPki {
        ca: PemPair {
            cert: ca.pem(),
            key: ca_key.serialize_pem(),
        },
        server,
        client,
    })
}

/// The files [`TestPki::write`] creates.
pub struct PkiFiles {
    /// The CA certificate (`ca.pem`): the receiver's `--client-ca`, the sender's `--ca`.
    pub ca: PathBuf,
    /// The CA's private key (`ca.key`), to issue more certificates.
    pub ca_key: PathBuf,
    /// The receiver's certificate (`server.pem`).
    pub server_cert: PathBuf,
    /// The receiver's private key (`server.key`).
    pub server_key: PathBuf,
    /// The sender's client certificate (`client.pem`).
    pub client_cert: PathBuf,
    /// The sender's private key (`client.key`).
    pub client_key: PathBuf,
}

impl PkiFiles {
    /// The file names used in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

impl TestPki {
    /// Writes `ca.pem`, `ca.key`, `server.pem`, `server.key`, `client.pem`, `client.key` into
    /// `dir` (created if missing); keys are readable by the owner only.
    pub fn write(&self, dir: &Path) -> Result<PkiFiles, Error> {
        let files = PkiFiles::in_dir(dir);
        let io_err = |path: &Path, e: std::io::Error| Error::Certificate {
            what: "certificate output",
            path: path.to_owned(),
            reason: e.to_string(),
        };
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let items = [
            (&files.ca, &self.ca.cert, 0o644),
            (&files.ca_key, &self.ca.key, 0o600),
            (&files.server_cert, &self.server.cert, 0o644),
            (&files.server_key, &self.server.key, 0o600),
            (&files.client_cert, &self.client.cert, 0o644),
            (&files.client_key, &self.client.key, 0o600),
        ];
        for (path, text, mode) in items {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(path)
                .map_err(|e| io_err(path, e))?;
            f.write_all(text.as_bytes()).map_err(|e| io_err(path, e))?;
        }
        Ok(files)
    }
}
