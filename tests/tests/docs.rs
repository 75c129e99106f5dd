//! The user guide can't drift from the code: every flag, key and variable is in the
//! configuration reference with its default, the example config loads and names every key,
//! every subcommand's help has examples, man pages and completions come out of the clap
//! definitions, and every error message the source can print is in the troubleshooting page.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use clap::CommandFactory as _;
use mcp_gateway::cli::Cli;
use mcp_gateway_tests::{e2e::TempDir, process::gateway_output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The keys the config file accepts, from the gateway's own "unknown field" error (serde lists
/// every field): at the top level, or in a `[[server]]` table.
fn config_keys(in_table: bool) -> BTreeSet<String> {
    let dir = TempDir::new("keys");
    let path = dir.path().join("probe.toml");
    let text = match in_table {
        false => "no_such_key = 1\n",
        true => "[[server]]\nno_such_key = 1\n",
    };
    std::fs::write(&path, text).unwrap();
    let out = gateway_output(&["run", "--config", path.to_str().unwrap(), "--check-config"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let list = stderr
        .split("expected one of ")
        .nth(1)
        .unwrap_or_else(|| panic!("no key list in: {stderr}"));
    list.split(',')
        .map_while(|k| {
            let k = k.trim();
            k.strip_prefix('`')
                .and_then(|k| k.split('`').next())
                .map(str::to_owned)
        })
        .collect()
}

/// `[default: X]` in a help text.
fn help_default(help: &str) -> Option<String> {
    let start = help.find("[default: ")? + "[default: ".len();
    Some(help[start..].split(']').next()?.to_owned())
}

#[test]
fn the_configuration_reference_has_every_flag_key_and_variable_with_its_default() {
    let doc = read("docs/configuration.md");
    let cli = Cli::command();
    let run = cli.find_subcommand("run").expect("run");
    let keys: BTreeSet<String> = config_keys(false)
        .into_iter()
        .chain(config_keys(true))
        .filter(|k| k != "server")
        .collect();
    assert!(keys.len() > 30, "{keys:?}");
    let mut missing = Vec::new();
    for arg in run.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue;
        };
        if long == "help" {
            continue;
        }
        let flag = format!("`--{long}`");
        if !doc.contains(&flag) {
            missing.push(format!("{flag} is not documented"));
            continue;
        }
        // A setting (it has a variable) has a row of the table.
        let Some(env) = arg.get_env() else {
            continue;
        };
        let Some(row) = doc
            .lines()
            .find(|l| l.starts_with('|') && l.contains(&flag))
        else {
            missing.push(format!("{flag} has no row"));
            continue;
        };
        let env = env.to_str().unwrap();
        if !row.contains(&format!("`{env}`")) {
            missing.push(format!("{flag}: its row lacks `{env}`"));
        }
        let key = env.trim_start_matches("MCP_GATEWAY_").to_lowercase();
        if key != "config" {
            if !keys.contains(&key) {
                missing.push(format!("{env} is not named after a config key"));
            }
            if !row.contains(&format!("`{key}`")) {
                missing.push(format!("{flag}: its row lacks the key `{key}`"));
            }
        }
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        if let Some(default) = help_default(&help).filter(|d| !row.contains(d)) {
            missing.push(format!("{flag}: its row lacks the default `{default}`"));
        }
    }
    for key in &keys {
        if !doc.contains(&format!("| `{key}` |")) {
            missing.push(format!("key `{key}` has no row"));
        }
    }
    // And nothing documented that isn't there.
    for row in doc.lines().filter(|l| l.starts_with("| `")) {
        let key = row.trim_start_matches("| `").split('`').next().unwrap();
        if !(keys.contains(key) || key.starts_with("RUST_")) {
            missing.push(format!(
                "the reference documents `{key}`, which is not a key"
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_example_config_loads_names_every_key_and_its_server_tables_work() {
    let example = read("mcp-gateway.example.toml");
    for key in config_keys(false).iter().chain(&config_keys(true)) {
        if key == "server" {
            continue;
        }
        let named = example
            .lines()
            .any(|l| l.trim_start_matches('#').starts_with(&format!("{key} =")));
        assert!(named, "mcp-gateway.example.toml does not show `{key}`");
    }
    let path = repo().join("mcp-gateway.example.toml");
    let out = gateway_output(&["run", "--config", path.to_str().unwrap(), "--check-config"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("configuration OK: 1 server"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Its commented [[server]] example, switched on (without the top-level upstream).
    let start = example.find("#[[server]]").expect("a [[server]] example");
    let tables: String = example[start..]
        .lines()
        .map(|l| l.strip_prefix('#').unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let top: String = example[..start]
        .lines()
        .filter(|l| !l.starts_with("upstream ="))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = TempDir::new("example");
    let two = dir.path().join("two.toml");
    std::fs::write(&two, format!("{top}\n{tables}\n")).unwrap();
    let out = gateway_output(&["run", "--config", two.to_str().unwrap(), "--check-config"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tables = example.matches("#[[server]]").count();
    assert!(tables >= 2);
    assert!(
        out.status.success() && stdout.starts_with(&format!("configuration OK: {tables} servers")),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_subcommand_has_examples_and_the_version_names_the_commit() {
    for sub in Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
    {
        let name = sub.get_name();
        let out = gateway_output(&[name, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name} --help");
        let example = format!("mcp-gateway {name}");
        assert!(
            help.contains("Examples:") && help.lines().any(|l| l.contains(&example)),
            "`mcp-gateway {name} --help` has no example:\n{help}"
        );
    }
    let out = gateway_output(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Exit status:"), "{help}");

    let out = gateway_output(&["--version"]);
    let version = String::from_utf8_lossy(&out.stdout);
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let want = format!(
        "mcp-gateway {} (commit {})",
        env!("CARGO_PKG_VERSION"),
        head.as_deref().unwrap_or("unknown")
    );
    assert_eq!(version.trim(), want);
}

#[test]
fn man_pages_and_completions_come_from_the_command_definitions() {
    let dir = TempDir::new("man");
    let out = gateway_output(&["man", "--out-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    let mut want = vec!["mcp-gateway.1".to_owned()];
    for sub in Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
    {
        want.push(format!("mcp-gateway-{}.1", sub.get_name()));
    }
    for page in &want {
        let text = std::fs::read_to_string(dir.path().join(page)).expect(page);
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
    }
    let run = std::fs::read_to_string(dir.path().join("mcp-gateway-run.1")).unwrap();
    assert!(
        run.contains("check\\-config"),
        "the run page documents its flags"
    );

    for shell in ["bash", "zsh", "fish"] {
        let out = gateway_output(&["completions", shell]);
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && script.contains("lockdown") && script.contains("--tls-cert"),
            "{shell}"
        );
        if shell == "bash" {
            let file = dir.path().join("completion.bash");
            std::fs::write(&file, script.as_bytes()).unwrap();
            let check = std::process::Command::new("bash")
                .arg("-n")
                .arg(&file)
                .output()
                .unwrap();
            assert!(check.status.success(), "bash -n: {check:?}");
        }
    }
}

/// Parses the Rust string literal at the start of `s` (after optional whitespace): its text
/// with escapes and line continuations resolved.
fn literal(s: &str) -> Option<String> {
    let s = s.trim_start();
    let mut chars = s.strip_prefix('"')?.chars().peekable();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                '\n' => {
                    while chars.peek().is_some_and(|c| c.is_whitespace()) {
                        chars.next();
                    }
                }
                'n' => out.push('\n'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// The longest placeholder-free stretch of a message template (what a reader can search for).
fn searchable(template: &str) -> Option<String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        pieces.push(&rest[..open]);
        rest = rest[open..].split_once('}').map_or("", |(_, r)| r);
    }
    pieces.push(rest);
    pieces
        .into_iter()
        .map(|p| p.trim_matches(|c: char| c.is_whitespace() || " `:;,.()".contains(c)))
        .filter(|p| p.len() >= 12)
        .max_by_key(|p| p.len())
        .map(str::to_owned)
}

/// Error message templates in `src`: `#[error("...")]`, `bail!("...")`, `anyhow!("...")`,
/// `.context("...")` and `.with_context(|| format!("..."))`.
fn messages(src: &str) -> Vec<String> {
    let mut found = Vec::new();
    for marker in ["#[error(", "bail!(", "anyhow!(", ".context("] {
        for (i, _) in src.match_indices(marker) {
            found.extend(literal(&src[i + marker.len()..]));
        }
    }
    for (i, _) in src.match_indices("with_context(") {
        let rest = src[i + "with_context(".len()..].trim_start();
        let Some(rest) = rest.strip_prefix("||") else {
            continue;
        };
        let rest = rest.trim_start();
        let rest = rest.strip_prefix('{').unwrap_or(rest).trim_start();
        if let Some(rest) = rest.strip_prefix("format!(") {
            found.extend(literal(rest));
        }
    }
    found
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_error_message_in_the_source_is_in_the_troubleshooting_page() {
    let doc = read("docs/troubleshooting.md");
    let mut files = Vec::new();
    sources(&repo().join("gateway/src"), &mut files);
    let mut checked = 0;
    let mut missing = Vec::new();
    for file in files {
        let src = std::fs::read_to_string(&file).unwrap();
        for template in messages(&src) {
            let Some(text) = searchable(&template) else {
                continue;
            };
            checked += 1;
            if !doc.contains(&text) {
                missing.push(format!("{}: {text}", file.display()));
            }
        }
    }
    assert!(
        checked > 30,
        "found only {checked} messages: the scanner is broken"
    );
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md lacks:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_scanner_finds_messages_in_every_form() {
    let src = r#"
        #[error("reading {path}: {cause}")]
        bail!("--watch: give a positive number of seconds");
        x.context("installing the SIGHUP handler")?;
        y.with_context(|| {
            format!(
                "metrics listener on {addr}: is another process using it? Choose another \
                 address"
            )
        })?;
    "#;
    let found: Vec<Option<String>> = messages(src).iter().map(|m| searchable(m)).collect();
    assert_eq!(
        found,
        [
            None,
            Some("--watch: give a positive number of seconds".to_owned()),
            Some("installing the SIGHUP handler".to_owned()),
            Some("is another process using it? Choose another address".to_owned()),
        ]
    );
}
