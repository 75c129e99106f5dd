//! The environment of a supervised server: only what its table lists, plus a minimal `PATH`,
//! `HOME` and `LANG`. Never the gateway's own environment (its tokens, its credentials).
use std::collections::BTreeMap;

/// `PATH` unless the table sets one; also where a bare command name is looked up.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// `LANG` unless the table sets one.
pub const LANG: &str = "C.UTF-8";

/// The whole environment of the child, sorted by name. `home` is its state directory.
pub fn child_env(listed: &BTreeMap<String, String>, home: &str) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = BTreeMap::from([
        ("PATH".to_owned(), PATH.to_owned()),
        ("HOME".to_owned(), home.to_owned()),
        ("LANG".to_owned(), LANG.to_owned()),
    ]);
    env.extend(listed.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.into_iter().collect()
}

/// Why a name can't be an environment variable's, if it can't.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not an environment variable name (letters, digits and `_`, not starting \
             with a digit)"
        ))
    }
}

/// Where `program` is: itself when it has a `/`, else the first executable of that name in
/// `path`.
pub fn find_program(program: &str, path: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_variables_and_a_minimal_base() {
        // The gateway's own environment plays no part, whatever it holds.
        let listed = BTreeMap::from([
            ("API_URL".to_owned(), "https://api.example".to_owned()),
            ("LANG".to_owned(), "de_DE.UTF-8".to_owned()),
        ]);
        let env = child_env(&listed, "/var/lib/mcp-gateway/servers/fetch");
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["API_URL", "HOME", "LANG", "PATH"]);
        assert_eq!(env[2].1, "de_DE.UTF-8", "the table wins");
        assert_eq!(env[3].1, PATH);
    }

    #[test]
    fn variable_names() {
        for good in ["A", "API_KEY", "_x1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1A", "A-B", "A=B", "A B", "\u{e4}"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn programs_are_found_on_the_path_or_by_their_path() {
        assert!(find_program("sh", PATH).is_some());
        assert_eq!(
            find_program("/bin/sh", "").as_deref(),
            Some(std::path::Path::new("/bin/sh"))
        );
        assert!(find_program("no-such-program-mcp-gateway", PATH).is_none());
        let plain = std::env::temp_dir().join(format!("mcp-gateway-plain-{}", std::process::id()));
        std::fs::write(&plain, "not a program").unwrap();
        let found = find_program(plain.to_str().unwrap(), PATH);
        std::fs::remove_file(&plain).unwrap();
        assert!(found.is_none(), "not executable");
        assert!(find_program("/tmp", PATH).is_none(), "a directory");
    }
}
