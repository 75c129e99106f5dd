//! Who may use a server: bearer-token credentials, TLS with optional client certificates, and
//! what a listener beyond loopback needs. Files are read here, at start, so a bad one stops the
//! gateway with the key that names it; reloads later keep the last good version instead.
use std::{net::SocketAddr, path::PathBuf, time::SystemTime};

use super::{ConfigError, file::ServerKeys};
use crate::{
    credentials::{self, CredentialSet},
    file_version,
    tls::{self, TlsFiles},
};

/// The credentials file and what it held at start.
#[derive(Debug)]
pub struct CredentialsFile {
    pub path: PathBuf,
    pub set: CredentialSet,
    /// The file's version before it was read (a later change is reloaded).
    pub version: file_version::Version,
}

/// The TLS files and what they held at start.
#[derive(Debug)]
pub struct TlsConfig {
    pub files: TlsFiles,
    pub loaded: tls::Loaded,
    /// The files' version before they were read.
    pub version: file_version::Version,
}

/// A server's access settings, with the files already loaded.
#[derive(Debug)]
pub struct Access {
    pub credentials: Option<CredentialsFile>,
    pub tls: Option<TlsConfig>,
    /// Plain HTTP on a non-loopback address (`allow_plaintext`): warned about at start.
    pub plaintext_beyond_loopback: bool,
}

fn invalid(key: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        why: why.into(),
    }
}

/// The access settings of a server listening on `listen`.
pub fn resolve(listen: SocketAddr, keys: &ServerKeys) -> Result<Access, ConfigError> {
    let tls_files = match (&keys.tls_cert, &keys.tls_key) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                "tls_key",
                "missing: tls_cert is set, so give its private key too (--tls-key FILE)",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "tls_cert",
                "missing: tls_key is set, so give its certificate too (--tls-cert FILE)",
            ));
        }
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: keys.client_ca.clone(),
            client_names: keys.allowed_client_names.clone().unwrap_or_default(),
        }),
    };
    if keys.client_ca.is_some() && tls_files.is_none() {
        return Err(invalid(
            "client_ca",
            "client certificates need TLS: set tls_cert and tls_key too",
        ));
    }
    if let Some(names) = &keys.allowed_client_names {
        if keys.client_ca.is_none() {
            return Err(invalid(
                "allowed_client_names",
                "needs client_ca (--client-ca FILE): the names are checked on client \
                 certificates",
            ));
        }
        for name in names {
            tls::names::check_allowed(name).map_err(|why| invalid("allowed_client_names", why))?;
        }
    }
    let plaintext = keys.allow_plaintext.unwrap_or(false);
    if plaintext && tls_files.is_some() {
        return Err(invalid(
            "allow_plaintext",
            "TLS is configured (tls_cert): serve one or the other; drop allow_plaintext",
        ));
    }
    let exposed = !listen.ip().is_loopback();
    if exposed {
        let mut missing = Vec::new();
        if !keys.allow_non_loopback.unwrap_or(false) {
            missing.push("--allow-non-loopback");
        }
        if keys.auth_token_file.is_none() && keys.client_ca.is_none() {
            missing.push(
                "authentication (--auth-token-file FILE, or --client-ca FILE for client \
                 certificates)",
            );
        }
        if tls_files.is_none() && !plaintext {
            missing.push(
                "TLS (--tls-cert FILE --tls-key FILE; or --allow-plaintext when a TLS \
                 terminator in front of this host does it)",
            );
        }
        if !missing.is_empty() {
            return Err(ConfigError::NonLoopback {
                addr: listen,
                missing: missing.join(", "),
            });
        }
    }
    let credentials = match &keys.auth_token_file {
        None => None,
        Some(path) => {
            let version = file_version::version(std::slice::from_ref(path));
            let set = credentials::load(path).map_err(|why| invalid("auth_token_file", why))?;
            Some(CredentialsFile {
                path: path.clone(),
                set,
                version,
            })
        }
    };
    let tls = match tls_files {
        None => None,
        Some(files) => {
            let version = file_version::version(&files.paths());
            let loaded = tls::load(&files, SystemTime::now())?;
            Some(TlsConfig {
                files,
                loaded,
                version,
            })
        }
    };
    Ok(Access {
        credentials,
        tls,
        plaintext_beyond_loopback: exposed && plaintext,
    })
}
