//! A TLS client for the gateway's HTTPS listener: trusts the test CA, presents a client
//! certificate when given one.
use std::{net::SocketAddr, path::Path, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};

use crate::pki::Pair;

/// Trusts `ca`; presents `client` when given.
pub fn config(ca: &Path, client: Option<&Pair>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("reading the CA") {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let chain = CertificateDer::pem_file_iter(&pair.cert)
                .expect("client cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("client cert PEM");
            let key = PrivateKeyDer::from_pem_file(&pair.key).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate")
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A TLS connection to `addr` for the name `localhost`.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// The leaf certificate the server at `addr` presents.
pub async fn served_certificate(addr: SocketAddr, ca: &Path) -> Vec<u8> {
    let stream = connect(addr, config(ca, None)).await.expect("TLS connect");
    let (_, conn) = stream.get_ref();
    conn.peer_certificates().expect("a certificate")[0].to_vec()
}

/// One MCP `ping` POST over a fresh TLS connection, with `headers`: the status, or why the
/// exchange failed (a refused handshake shows up here: TLS 1.3 clients learn of it on the
/// first read).
pub async fn post(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    headers: &[(&str, &str)],
) -> Result<u16, String> {
    let stream = connect(addr, config).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let mut req = http::Request::post("/mcp")
        .header("host", format!("localhost:{}", addr.port()))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request");
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(status)
}
