//! Named bearer-token credentials (`--auth-token-file`), swapped in place when the file changes.
//!
//! - [`file`]: the file format (pure).
//! - [`verify`]: which credential a request presents, in constant time.
//! - [`CredentialStore`]: the current set, read lock-free on every request and replaced
//!   whole by a reload, so a revoked token fails on the very next request, on any connection.
pub mod file;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use arc_swap::ArcSwap;
use http::{HeaderMap, header};
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};

/// The name of the one token of a file that holds a bare token.
pub const DEFAULT_NAME: &str = "default";

/// One credential. Only a digest of the token is kept: comparing fixed-size digests reveals
/// nothing about the token's length, and no copy of the secret sits in memory.
#[derive(Clone)]
pub struct Credential {
    pub name: Arc<str>,
    digest: [u8; 32],
    /// Shorter than [`file::SHORT_TOKEN`]: warned about at load.
    pub short: bool,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Credential {
    pub fn new(name: &str, token: &[u8]) -> Self {
        Self {
            name: name.into(),
            digest: digest(token),
            short: token.len() < file::SHORT_TOKEN,
        }
    }
}

/// Every credential a server accepts.
#[derive(Clone, Debug, Default)]
pub struct CredentialSet(Vec<Credential>);

impl CredentialSet {
    pub fn new(credentials: Vec<Credential>) -> Self {
        Self(credentials)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|c| &*c.name)
    }

    pub fn credentials(&self) -> &[Credential] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Which credential `headers` present (`Authorization: Bearer <token>`, exactly one such
/// header), if any. Every credential is compared, whatever matches, so the time taken says
/// nothing about which one did or how much of a token was right.
pub fn verify<'a>(headers: &HeaderMap, set: &'a CredentialSet) -> Option<&'a Credential> {
    let presented = presented(headers)?;
    let presented = digest(presented);
    // Index + 1 of the match, 0 for none, chosen without a data-dependent branch.
    let mut found = 0u32;
    for (i, c) in set.0.iter().enumerate() {
        let index = u32::try_from(i + 1).unwrap_or(u32::MAX);
        found.conditional_assign(&index, c.digest.ct_eq(&presented));
    }
    let found = usize::try_from(found).ok()?;
    found.checked_sub(1).and_then(|i| set.0.get(i))
}

/// The token of the one `Authorization: Bearer` header.
fn presented(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let value = value.as_bytes();
    value
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        .and(value.get(7..))
        .filter(|token| !token.is_empty())
}

/// What a reload changed.
#[derive(Debug, PartialEq, Eq)]
pub struct Change {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Same name, new token.
    pub rotated: Vec<String>,
    pub total: usize,
}

/// A server's credentials, from `path`, swapped whole on reload.
#[derive(Debug)]
pub struct CredentialStore {
    path: PathBuf,
    current: ArcSwap<CredentialSet>,
    /// The file's version when `initial` was read (see `reload`).
    version_at_start: crate::file_version::Version,
}

/// Reads and parses the credentials file at `path`.
pub fn load(path: &Path) -> Result<CredentialSet, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    file::parse(&text).map_err(|why| format!("{}: {why}", path.display()))
}

impl CredentialStore {
    pub fn new(
        path: PathBuf,
        initial: CredentialSet,
        version: crate::file_version::Version,
    ) -> Self {
        Self {
            path,
            current: ArcSwap::from_pointee(initial),
            version_at_start: version,
        }
    }

    pub fn version_at_start(&self) -> &crate::file_version::Version {
        &self.version_at_start
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The set in force now.
    pub fn current(&self) -> arc_swap::Guard<Arc<CredentialSet>> {
        self.current.load()
    }

    /// Reads the file again and puts the new set in force; on any error the old set stays.
    pub fn reload(&self) -> Result<Change, String> {
        let new = load(&self.path)?;
        let old = self.current.load_full();
        let change = diff(&old, &new);
        self.current.store(Arc::new(new));
        Ok(change)
    }
}

fn diff(old: &CredentialSet, new: &CredentialSet) -> Change {
    let find = |set: &CredentialSet, name: &str| set.0.iter().find(|c| &*c.name == name).cloned();
    let mut change = Change {
        added: Vec::new(),
        removed: Vec::new(),
        rotated: Vec::new(),
        total: new.len(),
    };
    for c in &new.0 {
        match find(old, &c.name) {
            None => change.added.push(c.name.to_string()),
            Some(o) if o.digest != c.digest => change.rotated.push(c.name.to_string()),
            Some(_) => {}
        }
    }
    for c in &old.0 {
        if find(new, &c.name).is_none() {
            change.removed.push(c.name.to_string());
        }
    }
    change
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn set() -> CredentialSet {
        file::parse("ci s3cret-token\nalice other-token-0123\n").unwrap()
    }

    fn who(values: &[&[u8]]) -> Option<String> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        verify(&headers, &set()).map(|c| c.name.to_string())
    }

    #[test]
    fn bearer_tokens_name_their_credential() {
        #[rustfmt::skip]
        let cases: &[(&[&[u8]], Option<&str>)] = &[
            (&[b"Bearer s3cret-token"], Some("ci")),
            (&[b"bearer other-token-0123"], Some("alice")),
            (&[b"BEARER s3cret-token"], Some("ci")),
            (&[], None),
            (&[b"Bearer s3cret-tokem"], None),
            (&[b"Bearer s3cret-token "], None),
            (&[b"Bearer s3cret"], None),
            (&[b"Bearer "], None),
            (&[b"Bearer"], None),
            (&[b"Basic s3cret-token"], None),
            (&[b"s3cret-token"], None),
            (&[b"Bearer  s3cret-token"], None),
            (&[b"Bearer s3cret-token", b"Bearer s3cret-token"], None),
            (&[b"Bearer s3cret-token", b"Bearer other-token-0123"], None),
            (&[b"Bearer s3cret-token\xff"], None),
        ];
        for (values, want) in cases {
            assert_eq!(who(values).as_deref(), *want, "{values:?}");
        }
    }

    #[test]
    fn an_empty_set_accepts_nothing() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(verify(&headers, &CredentialSet::default()).is_none());
    }

    #[test]
    fn debug_output_never_shows_a_token_or_its_digest() {
        let shown = format!("{:?}", set());
        assert!(shown.contains("ci") && !shown.contains("s3cret") && !shown.contains("digest"));
    }

    #[test]
    fn a_reload_reports_what_changed_and_a_bad_file_keeps_the_old_set() {
        let dir = std::env::temp_dir().join(format!("mcp-gw-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        std::fs::write(&path, "ci tok-ci-1\nalice tok-alice\n").unwrap();
        let store = CredentialStore::new(path.clone(), load(&path).unwrap(), Vec::new());

        std::fs::write(&path, "ci tok-ci-2\nbob tok-bob\n").unwrap();
        let change = store.reload().unwrap();
        assert_eq!(
            change,
            Change {
                added: vec!["bob".into()],
                removed: vec!["alice".into()],
                rotated: vec!["ci".into()],
                total: 2
            }
        );

        std::fs::write(&path, "ci tok\nci tok-2\n").unwrap();
        assert!(store.reload().unwrap_err().contains("line 2"));
        std::fs::remove_file(&path).unwrap();
        assert!(store.reload().unwrap_err().contains("reading"));
        let names: Vec<String> = store.current().names().map(str::to_owned).collect();
        assert_eq!(names, ["ci", "bob"], "the last good set stays in force");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
