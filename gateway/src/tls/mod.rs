//! HTTPS on the gateway's listener (rustls), with optional client certificates (mTLS).
//!
//! - [`load`]: the certificate, key and client CA files into a rustls `ServerConfig`, refusing
//!   what would fail later or silently: a key that isn't the certificate's, an expired
//!   certificate, a CA file without a certificate.
//! - [`TlsStore`]: the config in force, swapped whole when the files change (renewal needs no
//!   restart; connections already open keep their session).
//! - [`names`]: who a client certificate names and whether `--allow-client-name` admits it.
//! - [`verifier`]: the client-certificate check, chain first, then the name list.
pub mod names;
pub mod verifier;

use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use arc_swap::ArcSwap;
use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
    sign::{CertifiedKey, SingleCertAndKey},
};

/// The TLS files of one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate chaining to one of these CAs.
    pub client_ca: Option<PathBuf>,
    /// ...and naming one of these (empty: any name).
    pub client_names: Vec<String>,
}

impl TlsFiles {
    /// Every file: certificate, key and client CA.
    pub fn paths(&self) -> Vec<PathBuf> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// Why TLS files can't be used. Each names the config key, and never shows key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: reading {}: {cause}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    #[error("{key}: {}: {why}", path.display())]
    Invalid {
        key: &'static str,
        path: PathBuf,
        why: String,
    },
}

impl TlsError {
    pub fn key(&self) -> &'static str {
        match self {
            Self::Read { key, .. } | Self::Invalid { key, .. } => key,
        }
    }
}

/// What was loaded, for the log.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Arc<ServerConfig>,
    /// The server certificate's names and validity.
    pub cert: names::CertInfo,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|cause| TlsError::Read {
        key,
        path: path.to_owned(),
        cause,
    })
}

fn invalid(key: &'static str, path: &Path, why: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        key,
        path: path.to_owned(),
        why: why.into(),
    }
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(key, path, format!("not a PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            key,
            path,
            "holds no certificate (a PEM block starting -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Reads and checks `files`, as of `now`.
pub fn load(files: &TlsFiles, now: SystemTime) -> Result<Loaded, TlsError> {
    let provider = provider();
    let certs = certificates("tls_cert", &files.cert)?;
    let info = names::info(&certs[0]).map_err(|e| invalid("tls_cert", &files.cert, e))?;
    if let Some(t) = info.not_after.filter(|t| *t <= now) {
        return Err(invalid(
            "tls_cert",
            &files.cert,
            format!(
                "the certificate expired on {}; renew it (the gateway picks up the new file \
                 without a restart)",
                rfc3339(t)
            ),
        ));
    }
    if let Some(t) = info.not_before.filter(|t| *t > now) {
        return Err(invalid(
            "tls_cert",
            &files.cert,
            format!(
                "the certificate is not valid before {}; check this host's clock",
                rfc3339(t)
            ),
        ));
    }
    let key_pem = read("tls_key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        invalid(
            "tls_key",
            &files.key,
            format!(
                "holds no usable private key ({e}); give an unencrypted PKCS#8, PKCS#1 or SEC1 \
                 PEM key"
            ),
        )
    })?;
    let certified = CertifiedKey::from_der(certs, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => invalid(
            "tls_key",
            &files.key,
            format!(
                "this key does not belong to the certificate in {}; give the key the \
                 certificate was issued for",
                files.cert.display()
            ),
        ),
        e => invalid(
            "tls_key",
            &files.key,
            format!("not a usable private key: {e}"),
        ),
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("tls_cert", &files.cert, e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            builder.with_client_cert_verifier(client_verifier(ca, &files.client_names, provider)?)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    // HTTP/1.1 only (the gateway speaks nothing else); a client offering h2 alone is refused.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        cert: info,
    })
}

fn client_verifier(
    ca: &Path,
    allowed: &[String],
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("client_ca", ca)? {
        roots
            .add(cert)
            .map_err(|e| invalid("client_ca", ca, format!("not a usable CA certificate: {e}")))?;
    }
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| invalid("client_ca", ca, e.to_string()))?;
    Ok(Arc::new(verifier::NameCheck::new(inner, allowed.to_vec())))
}

/// A server's TLS config, swapped whole on reload.
#[derive(Debug)]
pub struct TlsStore {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
    /// The files' version when they were loaded at start (see `reload`).
    version_at_start: crate::file_version::Version,
}

impl TlsStore {
    pub fn new(files: TlsFiles, loaded: &Loaded, version: crate::file_version::Version) -> Self {
        Self {
            files,
            current: ArcSwap::new(loaded.config.clone()),
            version_at_start: version,
        }
    }

    pub fn version_at_start(&self) -> &crate::file_version::Version {
        &self.version_at_start
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The paths whose change means a reload.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.paths()
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Loads the files again; on any error the config in force stays.
    pub fn reload(&self) -> Result<Loaded, TlsError> {
        let loaded = load(&self.files, SystemTime::now())?;
        self.current.store(loaded.config.clone());
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests;
