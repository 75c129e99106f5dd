//! The credentials file (`--auth-token-file`): one `NAME TOKEN` per line, blank lines and `#`
//! comments allowed; a file holding one bare token is the credential `default`.
//!
//! Errors name the line, never its text: the text is a secret.
use super::{Credential, CredentialSet, DEFAULT_NAME};

/// Longest credential name: it is a log field and a metric label.
pub const MAX_NAME_LEN: usize = 64;

/// Tokens shorter than this are accepted with a warning (an existing deployment keeps working).
pub const SHORT_TOKEN: usize = 16;

/// Parses the text of a credentials file.
pub fn parse(text: &str) -> Result<CredentialSet, String> {
    let mut lines: Vec<(usize, Vec<&str>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        lines.push((i + 1, line.split_ascii_whitespace().collect()));
    }
    if lines.is_empty() {
        return Err("holds no credential; write one `NAME TOKEN` per line".into());
    }
    // One bare token: the file format from before named credentials.
    if let [(n, fields)] = lines.as_slice()
        && let [token] = fields.as_slice()
    {
        return Ok(CredentialSet::new(vec![credential(
            *n,
            DEFAULT_NAME,
            token,
        )?]));
    }
    let mut credentials: Vec<Credential> = Vec::with_capacity(lines.len());
    for (n, fields) in &lines {
        let [name, token] = fields.as_slice() else {
            return Err(format!(
                "line {n}: write `NAME TOKEN` (two fields separated by a space); a token has no \
                 spaces, and a file of several lines names every token"
            ));
        };
        let c = credential(*n, name, token)?;
        if let Some(same) = credentials.iter().position(|o| o.name == c.name) {
            return Err(format!(
                "line {n}: the name `{name}` is also on line {}; give each credential its own name",
                lines[same].0
            ));
        }
        if let Some(same) = credentials.iter().position(|o| o.digest == c.digest) {
            return Err(format!(
                "line {n}: the same token as line {}; give each credential its own token",
                lines[same].0
            ));
        }
        credentials.push(c);
    }
    Ok(CredentialSet::new(credentials))
}

fn credential(line: usize, name: &str, token: &str) -> Result<Credential, String> {
    let name_ok = name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    if !name_ok {
        return Err(format!(
            "line {line}: a name is 1 to {MAX_NAME_LEN} letters, digits, `.`, `_`, `-` or `@` \
             (it names the client in logs and metrics)"
        ));
    }
    // Whitespace can't occur (the line was split on it); control characters can.
    if token.chars().any(char::is_control) {
        return Err(format!(
            "line {line}: the token has a control character; a token is printable text"
        ));
    }
    Ok(Credential::new(name, token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (file text, Ok(names) or a piece of the error).
    type Case = (&'static str, Result<&'static [&'static str], &'static str>);

    #[test]
    fn credentials_files_parse_or_say_which_line_is_wrong() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("s3cret-token\n", Ok(&["default"])),
            ("  s3cret-token  ", Ok(&["default"])),
            ("# rotated 2026-11-01\n\nci 0123456789abcdef\n", Ok(&["ci"])),
            ("ci tok-a\nalice@laptop tok-b\n# old: bob tok-c\n", Ok(&["ci", "alice@laptop"])),
            ("ci\ttok-a\n", Ok(&["ci"])),
            ("ci tok-a\r\nbob tok-b\r\n", Ok(&["ci", "bob"])),
            ("", Err("holds no credential")),
            ("# only a comment\n\n", Err("holds no credential")),
            ("tok-a\ntok-b\n", Err("line 1: write `NAME TOKEN`")),
            ("ci tok-a\nbare\n", Err("line 2: write `NAME TOKEN`")),
            ("ci tok a\n", Err("line 1: write `NAME TOKEN`")),
            ("ci tok-a\nci tok-b\n", Err("line 2: the name `ci` is also on line 1")),
            ("ci tok-a\n\nbob tok-a\n", Err("line 3: the same token as line 1")),
            ("c{i} tok-a\n", Err("line 1: a name is 1 to 64")),
            ("ci tok\u{7f}a\n", Err("line 1: the token has a control character")),
            ("bare\u{1b}[31m\n", Err("line 1: the token has a control character")),
        ];
        for (text, want) in cases {
            match (parse(text), want) {
                (Ok(set), Ok(names)) => {
                    let got: Vec<&str> = set.names().collect();
                    assert_eq!(&got, names, "{text:?}");
                }
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{text:?}: {e}"),
                (got, _) => panic!("{text:?}: {:?}", got.map(|s| s.names().count())),
            }
        }
    }

    #[test]
    fn errors_never_show_the_token() {
        for text in ["ci s3cret\nci other\n", "ci s3cret x\n", "c{i} s3cret\n"] {
            let e = parse(text).unwrap_err();
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn a_long_name_is_refused() {
        let text = format!("{} tok\n", "n".repeat(MAX_NAME_LEN + 1));
        assert!(parse(&text).unwrap_err().contains("1 to 64"));
        let text = format!("{} tok\n", "n".repeat(MAX_NAME_LEN));
        assert!(parse(&text).is_ok());
    }
}
