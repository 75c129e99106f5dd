use std::time::SystemTime;

use rcgen::{CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use super::*;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mcp-gw-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate for `localhost` signed by `ca`, valid from `from` to `to` (years).
fn leaf(ca: &CertifiedIssuer<'_, KeyPair>, from: i32, to: i32) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(to, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn tls_files_load_or_say_which_key_is_wrong_and_why() {
    let dir = Dir::new("load");
    let ca = ca();
    let (cert, key) = leaf(&ca, 2020, 2099);
    let (expired, expired_key) = leaf(&ca, 2020, 2021);
    let (future, future_key) = leaf(&ca, 2098, 2099);
    let (_, other_key) = leaf(&ca, 2020, 2099);
    let cert = dir.write("cert.pem", &cert);
    let key = dir.write("key.pem", &key);
    let ca_pem = dir.write("ca.pem", &ca.pem());
    let files = |cert: &Path, key: &Path, ca: Option<&Path>| TlsFiles {
        cert: cert.to_owned(),
        key: key.to_owned(),
        client_ca: ca.map(Path::to_owned),
        client_names: Vec::new(),
    };
    let missing = dir.0.join("missing.pem");
    let garbage = dir.write("garbage.pem", "not pem at all\n");
    let cases: Vec<(TlsFiles, Result<(), &str>)> = vec![
        (files(&cert, &key, None), Ok(())),
        (files(&cert, &key, Some(&ca_pem)), Ok(())),
        (files(&missing, &key, None), Err("tls_cert: reading /tmp/")),
        (files(&cert, &missing, None), Err("tls_key: reading")),
        (files(&garbage, &key, None), Err("tls_cert: ")),
        (files(&key, &key, None), Err("holds no certificate")),
        (files(&cert, &cert, None), Err("tls_key: ")),
        (
            files(&cert, &dir.write("other.key", &other_key), None),
            Err("this key does not belong to the certificate"),
        ),
        (
            files(
                &dir.write("expired.pem", &expired),
                &dir.write("expired.key", &expired_key),
                None,
            ),
            Err("the certificate expired on 2021-01-01T00:00:00Z; renew it"),
        ),
        (
            files(
                &dir.write("future.pem", &future),
                &dir.write("future.key", &future_key),
                None,
            ),
            Err("not valid before 2098-01-01T00:00:00Z"),
        ),
        (
            files(&cert, &key, Some(&missing)),
            Err("client_ca: reading"),
        ),
        (files(&cert, &key, Some(&key)), Err("client_ca: ")),
    ];
    for (files, want) in cases {
        match (load(&files, SystemTime::now()), want) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err(needle)) => {
                let shown = e.to_string();
                assert!(shown.contains(needle), "{files:?}: {shown}");
                assert!(!shown.contains("PRIVATE KEY"), "{shown}");
            }
            (got, want) => panic!("{files:?}: {:?}, wanted {want:?}", got.map(|_| ())),
        }
    }
}

#[test]
fn a_reload_with_a_bad_file_keeps_the_config_in_force() {
    let dir = Dir::new("reload");
    let ca = ca();
    let (cert, key) = leaf(&ca, 2020, 2099);
    let files = TlsFiles {
        cert: dir.write("cert.pem", &cert),
        key: dir.write("key.pem", &key),
        client_ca: None,
        client_names: Vec::new(),
    };
    let loaded = load(&files, SystemTime::now()).unwrap();
    let store = TlsStore::new(files.clone(), &loaded, Vec::new());
    let before = store.current.load_full();
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
    assert!(store.reload().is_err());
    assert!(Arc::ptr_eq(&before, &store.current.load_full()));
    let (cert, key) = leaf(&ca, 2020, 2099);
    std::fs::write(&files.cert, cert).unwrap();
    std::fs::write(&files.key, key).unwrap();
    store.reload().unwrap();
    assert!(!Arc::ptr_eq(&before, &store.current.load_full()));
}
