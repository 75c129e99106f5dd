//! HTTPS and client certificates on the real gateway binary: which handshakes get through, what
//! a client certificate's name becomes, bad files at start, and certificate renewal without a
//! restart.
use std::{net::SocketAddr, time::Duration};

use mcp_gateway_tests::{
    gateway::BinaryGateway,
    pki::{Pair, Pki},
    process::gateway_output,
    prometheus::{parse, promtool_check, rejections, scrape, value},
    tls,
    upstream::Upstream,
};

const AGENT: &str = "spiffe://example.org/ns/prod/sa/agent";

fn tls_flags(server: &Pair) -> Vec<&str> {
    vec![
        "--ebpf",
        "off",
        "--tls-cert",
        server.cert_str(),
        "--tls-key",
        server.key_str(),
    ]
}

/// The status of a plain-HTTP request, if anything answered one.
fn plain_http_status(addr: SocketAddr) -> Option<u16> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ =
        stream.write_all(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn samples(gw: &BinaryGateway) -> Vec<mcp_gateway_tests::prometheus::Sample> {
    parse(&scrape(gw.metrics))
}

/// Waits (up to 3 s) for `done`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 3 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_certificate_from_the_client_ca_naming_an_allowed_client_gets_through() {
    let pki = Pki::new("mtls");
    let upstream = Upstream::start().await;
    let ca = pki.ca_cert.to_str().unwrap();
    let mut flags = tls_flags(&pki.server);
    flags.extend(["--client-ca", ca, "--allow-client-name", AGENT]);
    let gw = BinaryGateway::start(upstream.addr, &flags);

    let agent = pki.client("agent", &[AGENT, "agent.example.org"]);
    let intruder = pki.client("intruder", &["spiffe://example.org/ns/prod/sa/intruder"]);
    let foreign = pki.foreign_client("foreign", &[AGENT]);
    let cases: [(&str, Option<&Pair>, bool); 4] = [
        (
            "a certificate from the CA naming the allowed client",
            Some(&agent),
            true,
        ),
        ("no certificate", None, false),
        (
            "another CA's certificate naming the allowed client",
            Some(&foreign),
            false,
        ),
        (
            "a certificate from the CA naming another client",
            Some(&intruder),
            false,
        ),
    ];
    for (what, client, admitted) in cases {
        let got = tls::post(gw.listen, tls::config(&pki.ca_cert, client), &[]).await;
        match admitted {
            true => assert_eq!(got, Ok(200), "{what}"),
            false => assert!(got.is_err(), "{what}: {got:?}"),
        }
    }
    // Plain HTTP on the HTTPS port gets nothing either.
    assert_eq!(
        plain_http_status(gw.listen),
        None,
        "plain HTTP was answered"
    );
    assert_eq!(
        upstream.requests().len(),
        1,
        "only the admitted client's request went upstream"
    );

    let text = scrape(gw.metrics);
    promtool_check(&text).expect("the exposition with credential labels is valid");
    let s = parse(&text);
    assert_eq!(
        rejections(&s, "tls", "127.0.0.1"),
        4,
        "each refused handshake is counted"
    );
    assert_eq!(
        value(&s, "mcp_gateway_tls_certificate_not_after_seconds", &[]),
        4_070_908_800.0,
        "the server certificate's notAfter, 2099-01-01"
    );
    assert_eq!(
        value(
            &s,
            "mcp_gateway_requests_total",
            &[("credential", AGENT), ("status", "200")]
        ),
        1.0,
        "the certificate's name is the credential"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_and_client_certificates_both_are_required() {
    let pki = Pki::new("mtls-token");
    let upstream = Upstream::start().await;
    let tokens = pki.dir().join("tokens");
    std::fs::write(&tokens, "laptop 8c1d2e3f4a5b6c7d8e9f\n").unwrap();
    let ca = pki.ca_cert.to_str().unwrap();
    let mut flags = tls_flags(&pki.server);
    flags.extend([
        "--client-ca",
        ca,
        "--auth-token-file",
        tokens.to_str().unwrap(),
    ]);
    let gw = BinaryGateway::start(upstream.addr, &flags);
    let agent = pki.client("agent", &[AGENT]);
    let config = tls::config(&pki.ca_cert, Some(&agent));

    let bearer = [("authorization", "Bearer 8c1d2e3f4a5b6c7d8e9f")];
    assert_eq!(tls::post(gw.listen, config.clone(), &[]).await, Ok(401));
    assert_eq!(
        tls::post(
            gw.listen,
            config.clone(),
            &[("authorization", "Bearer nope")]
        )
        .await,
        Ok(401)
    );
    assert_eq!(tls::post(gw.listen, config, &bearer).await, Ok(200));
    let no_cert = tls::post(gw.listen, tls::config(&pki.ca_cert, None), &bearer).await;
    assert!(
        no_cert.is_err(),
        "a token without a certificate: {no_cert:?}"
    );
    assert_eq!(upstream.requests().len(), 1);
    let s = samples(&gw);
    assert_eq!(
        value(
            &s,
            "mcp_gateway_requests_total",
            &[("credential", AGENT), ("status", "401")]
        ),
        2.0,
        "the refusals are the certificate holder's"
    );
}

#[test]
fn bad_tls_files_fail_at_start_naming_the_key_and_the_fix() {
    let pki = Pki::new("tls-bad");
    let expired = pki.server_cert("expired", 2020, 2021);
    let other = pki.server_cert("other", 2020, 2099);
    let missing = pki.dir().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let (cert, key) = (pki.server.cert_str(), pki.server.key_str());
    let ca = pki.ca_cert.to_str().unwrap();
    let cases: [(Vec<&str>, &str); 8] = [
        (
            vec!["--tls-cert", missing, "--tls-key", key],
            "tls_cert: reading",
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", missing],
            "tls_key: reading",
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", other.key_str()],
            "tls_key: ",
        ),
        (
            vec![
                "--tls-cert",
                expired.cert_str(),
                "--tls-key",
                expired.key_str(),
            ],
            "the certificate expired on 2021-01-01T00:00:00Z; renew it",
        ),
        (
            vec!["--tls-cert", cert],
            "tls_key: missing: tls_cert is set",
        ),
        (
            vec!["--client-ca", ca],
            "client_ca: client certificates need TLS",
        ),
        (
            vec![
                "--tls-cert",
                cert,
                "--tls-key",
                key,
                "--allow-client-name",
                AGENT,
            ],
            "allowed_client_names: needs client_ca",
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", key, "--client-ca", key],
            "client_ca: ",
        ),
    ];
    for (flags, want) in cases {
        let mut args = vec![
            "run",
            "--upstream",
            "http://127.0.0.1:9/mcp",
            "--listen",
            "127.0.0.1:0",
            "--ebpf",
            "off",
            "--metrics-listen",
            "off",
        ];
        args.extend(&flags);
        let out = gateway_output(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} started");
        assert!(
            stderr.contains(want),
            "{flags:?}: should say {want}:\n{stderr}"
        );
        assert!(
            !stderr.contains("PRIVATE KEY"),
            "key material in the error: {stderr}"
        );
    }
    // The key mismatch says what to do.
    let out = gateway_output(&[
        "run",
        "--upstream",
        "http://127.0.0.1:9/mcp",
        "--ebpf",
        "off",
        "--metrics-listen",
        "off",
        "--tls-cert",
        cert,
        "--tls-key",
        other.key_str(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("this key does not belong to the certificate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Replaces `target` with `source`'s content atomically (as renewal tools do).
fn replace(source: &std::path::Path, target: &std::path::Path) {
    let tmp = target.with_extension("new");
    std::fs::copy(source, &tmp).unwrap();
    std::fs::rename(&tmp, target).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_bad_one_is_not() {
    let pki = Pki::new("tls-reload");
    let upstream = Upstream::start().await;
    // The gateway reads its own copy, which the test then renews.
    let live = Pair {
        cert: pki.dir().join("live.pem"),
        key: pki.dir().join("live.key"),
    };
    replace(&pki.server.cert, &live.cert);
    replace(&pki.server.key, &live.key);
    let gw = BinaryGateway::start(upstream.addr, &tls_flags(&live));
    let served = |gw: SocketAddr| tls::served_certificate(gw, &pki.ca_cert);
    let first = served(gw.listen).await;
    let counts = |gw: &BinaryGateway| {
        let s = samples(gw);
        let what = [("what", "tls")];
        (
            value(&s, "mcp_gateway_config_reloads_total", &what),
            value(&s, "mcp_gateway_config_reload_errors_total", &what),
        )
    };
    assert_eq!(counts(&gw), (0.0, 0.0));

    // A broken certificate: an error, and the old one stays.
    std::fs::write(
        pki.dir().join("broken.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n",
    )
    .unwrap();
    replace(&pki.dir().join("broken.pem"), &live.cert);
    eventually("the failed reload is counted", || counts(&gw).1 == 1.0).await;
    assert_eq!(
        served(gw.listen).await,
        first,
        "a broken file replaced the certificate"
    );

    // An expired one: the same.
    let expired = pki.server_cert("expired", 2020, 2021);
    replace(&expired.key, &live.key);
    replace(&expired.cert, &live.cert);
    eventually("the expired certificate is refused", || {
        counts(&gw).1 >= 2.0
    })
    .await;
    assert_eq!(served(gw.listen).await, first);

    // A renewed one: served from the next handshake on; the old connection's session stays.
    let renewed = pki.server_cert("renewed", 2020, 2099);
    let old_connection = tls::connect(gw.listen, tls::config(&pki.ca_cert, None))
        .await
        .unwrap();
    replace(&renewed.key, &live.key);
    replace(&renewed.cert, &live.cert);
    eventually("the renewed certificate is loaded", || counts(&gw).0 >= 1.0).await;
    let now = served(gw.listen).await;
    assert_ne!(now, first, "still the old certificate");
    assert_eq!(
        now,
        std::fs::read(&renewed.cert)
            .map(|pem| pem_der(&pem))
            .unwrap()
    );
    let (_, conn) = old_connection.get_ref();
    assert_eq!(conn.peer_certificates().unwrap()[0].to_vec(), first);
}

fn pem_der(pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    CertificateDer::from_pem_slice(pem).unwrap().to_vec()
}
