//! A throwaway PKI for the TLS tests (rcgen): a CA, a server certificate for `localhost` and
//! `127.0.0.1`, client certificates with chosen names, and a second, untrusted CA.
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};

use crate::e2e::TempDir;

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pair {
    pub fn cert_str(&self) -> &str {
        self.cert.to_str().expect("utf-8 path")
    }

    pub fn key_str(&self) -> &str {
        self.key.to_str().expect("utf-8 path")
    }
}

/// One CA and the files it issued, in a directory removed on drop.
pub struct Pki {
    dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (PEM): the clients' trust root and the gateway's `--client-ca`.
    pub ca_cert: PathBuf,
    /// The gateway's certificate, for `localhost` and `127.0.0.1`.
    pub server: Pair,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

impl Pki {
    pub fn new(label: &str) -> Self {
        let dir = TempDir::new(label);
        let ca = ca("mcp-gateway test CA");
        let ca_cert = dir.path().join("ca.pem");
        std::fs::write(&ca_cert, ca.pem()).expect("writing the CA");
        let mut pki = Self {
            server: Pair {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            dir,
            ca,
            ca_cert,
        };
        pki.server = pki.server_cert("server", 2020, 2099);
        pki
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, file: &str, cert: &str, key: &KeyPair) -> Pair {
        let pair = Pair {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&pair.cert, cert).expect("writing a certificate");
        std::fs::write(&pair.key, key.serialize_pem()).expect("writing a key");
        pair
    }

    /// A server certificate for `localhost` and `127.0.0.1`, valid from `from` to `to`
    /// (January 1st of those years).
    pub fn server_cert(&self, file: &str, from: i32, to: i32) -> Pair {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("server cert");
        self.write(file, &cert.pem(), &key)
    }

    /// A client certificate issued by this CA, naming `names` (URIs have `://`, the rest are
    /// DNS names).
    pub fn client(&self, file: &str, names: &[&str]) -> Pair {
        let key = KeyPair::generate().expect("key");
        let cert = client_params(names)
            .signed_by(&key, &self.ca)
            .expect("client cert");
        self.write(file, &cert.pem(), &key)
    }

    /// A client certificate naming `names` from another CA, which the gateway doesn't trust.
    pub fn foreign_client(&self, file: &str, names: &[&str]) -> Pair {
        let other = ca("another CA");
        let key = KeyPair::generate().expect("key");
        let cert = client_params(names)
            .signed_by(&key, &other)
            .expect("client cert");
        self.write(file, &cert.pem(), &key)
    }
}

fn client_params(names: &[&str]) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "client");
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.contains("://") {
            true => SanType::URI((*n).try_into().expect("URI")),
            false => SanType::DnsName((*n).try_into().expect("DNS name")),
        })
        .collect();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}
