//! The `/metrics` listener's settings as flags and file keys (value types; the exporter is
//! `crate::metrics`).

/// Default `--metrics-listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// `--metrics-listen`: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Listen {
    Off,
    On(std::net::SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        s.parse()
            .map(Self::On)
            .map_err(|_| format!("`{s}` is neither an address (e.g. {DEFAULT_LISTEN}) nor `off`"))
    }
}

impl TryFrom<String> for Listen {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Default `origin` label budget (`--metrics-label-budget`).
pub const DEFAULT_LABEL_BUDGET: usize = 200;
/// Largest accepted label budget.
pub const MAX_LABEL_BUDGET: usize = 10_000;
