//! Resource limits of a supervised server, written to its cgroup: `memory_max`, `cpu_max`,
//! `pids_max`. Parsing is pure; whether the kernel can enforce one here (its controller must be
//! in cgroup v2 and enabled for the gateway's cgroup's children) is decided at start, and a
//! limit that is not in force says so loudly, in the log and in a metric.

/// One limit, as the cgroup file wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The table key (`memory_max`).
    pub key: &'static str,
    /// The cgroup-v2 controller (`memory`).
    pub controller: &'static str,
    /// The file in the server's cgroup (`memory.max`).
    pub file: &'static str,
    /// What is written to it.
    pub value: String,
    /// As configured, for logs and metrics.
    pub shown: String,
}

/// `memory_max`: bytes, or a number with K, M, G or T (powers of 1024), or `max`.
pub fn memory_max(text: &str) -> Result<Limit, String> {
    let t = text.trim();
    let value = if t == "max" {
        "max".to_owned()
    } else {
        let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            Some((i, _)) => t.split_at(i),
            None => (t, ""),
        };
        let shift = match unit.trim().to_ascii_uppercase().as_str() {
            "" => 0,
            "K" | "KB" | "KIB" => 10,
            "M" | "MB" | "MIB" => 20,
            "G" | "GB" | "GIB" => 30,
            "T" | "TB" | "TIB" => 40,
            _ => {
                return Err(format!(
                    "`{text}`: give bytes, or a number with K, M, G or T"
                ));
            }
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{text}`: give bytes, or a number with K, M, G or T"))?;
        let bytes = n
            .checked_mul(1u64 << shift)
            .filter(|b| *b >= 1 << 20)
            .ok_or_else(|| format!("`{text}`: give at least 1M (and less than 16 EiB)"))?;
        bytes.to_string()
    };
    Ok(Limit {
        key: "memory_max",
        controller: "memory",
        file: "memory.max",
        value,
        shown: t.to_owned(),
    })
}

/// `cpu_max`: a share of one CPU, `50%` (half a CPU) to `10000%` (a hundred CPUs).
pub fn cpu_max(text: &str) -> Result<Limit, String> {
    const PERIOD: u64 = 100_000;
    let t = text.trim();
    let percent: u64 = t
        .strip_suffix('%')
        .and_then(|n| n.trim().parse().ok())
        .filter(|p| (1..=10_000).contains(p))
        .ok_or_else(|| format!("`{text}`: give a share of one CPU from 1% to 10000%, like 50%"))?;
    Ok(Limit {
        key: "cpu_max",
        controller: "cpu",
        file: "cpu.max",
        value: format!("{} {PERIOD}", percent * PERIOD / 100),
        shown: t.to_owned(),
    })
}

/// `pids_max`: the most processes and threads the server may have at once.
pub fn pids_max(n: u64) -> Result<Limit, String> {
    if n == 0 || n > 4_194_304 {
        return Err(format!("{n}: give 1 to 4194304 processes"));
    }
    Ok(Limit {
        key: "pids_max",
        controller: "pids",
        file: "pids.max",
        value: n.to_string(),
        shown: n.to_string(),
    })
}

/// Whether `controller` can be used for children, from the parent cgroup's
/// `cgroup.controllers` (what it has) text. Pure.
pub fn available(controllers: &str, controller: &str) -> bool {
    controllers.split_whitespace().any(|c| c == controller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory() {
        for (text, value) in [
            ("512M", "536870912"),
            ("1G", "1073741824"),
            ("2 GiB", "2147483648"),
            ("1048576", "1048576"),
            ("max", "max"),
        ] {
            assert_eq!(memory_max(text).unwrap().value, value, "{text}");
        }
        for bad in ["", "M", "12X", "-1M", "1.5G", "100", "99999999999T", "1M1"] {
            assert!(memory_max(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu() {
        assert_eq!(cpu_max("50%").unwrap().value, "50000 100000");
        assert_eq!(cpu_max("250%").unwrap().value, "250000 100000");
        for bad in ["", "50", "0%", "10001%", "-5%", "half"] {
            assert!(cpu_max(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pids() {
        assert_eq!(pids_max(64).unwrap().value, "64");
        assert!(pids_max(0).is_err());
        assert!(pids_max(u64::MAX).is_err());
    }

    #[test]
    fn controllers() {
        assert!(available("cpuset cpu io memory pids", "pids"));
        assert!(!available("hugetlb", "pids"));
        assert!(!available("cpuset", "cpu"), "not a prefix match");
    }
}
