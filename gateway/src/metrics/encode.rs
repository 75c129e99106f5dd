//! The exposition: Prometheus text format 0.0.4, or OpenMetrics 1.0 when the scraper asks.
//!
//! Written by hand (a few families, fixed label names) so the escaping is ours to prove: every
//! label value passes [`label_value`], which turns anything but printable ASCII into `\xNN`
//! text and escapes `\`, `"` (and, by then impossible, newlines) as both formats require. A
//! hostile origin can't end a label, start a line or carry invalid UTF-8 into the output.
use std::fmt::{Display, Write as _};

/// The two formats served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when `Accept` lists `application/openmetrics-text` (with a non-zero q),
    /// else the text format.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let wants_om = accept.is_some_and(|accept| {
            accept.split(',').any(|item| {
                let mut params = item.split(';').map(str::trim);
                let media = params.next().unwrap_or_default();
                let refused = params.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if wants_om {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Metric family types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Builds one exposition.
#[derive(Debug)]
pub struct Encoder {
    format: Format,
    out: String,
}

impl Encoder {
    pub fn new(format: Format) -> Self {
        Self {
            format,
            out: String::with_capacity(4096),
        }
    }

    /// Starts a family. `name` is the sample name without the `_total` of a counter.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let (family, kind) = match (self.format, kind) {
            (Format::Text, Kind::Counter) => (format!("{name}_total"), "counter"),
            (Format::OpenMetrics, Kind::Counter) => (name.to_owned(), "counter"),
            (_, Kind::Gauge) => (name.to_owned(), "gauge"),
            (_, Kind::Histogram) => (name.to_owned(), "histogram"),
        };
        let _ = writeln!(self.out, "# HELP {family} {}", help_text(help));
        let _ = writeln!(self.out, "# TYPE {family} {kind}");
    }

    /// One sample line. `name` is the full sample name (with `_total`, `_bucket`...).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", label_value(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    pub fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// A label value as both formats want it inside double quotes.
pub fn label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            0x20..=0x7e => out.push(char::from(byte)),
            // Control characters and every byte of a non-ASCII character: as text, with the
            // backslash itself escaped.
            _ => {
                let _ = write!(out, "\\\\x{byte:02x}");
            }
        }
    }
    out
}

/// HELP text: only `\` and newlines need escaping; ours has neither, but stay correct.
fn help_text(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_cannot_break_out() {
        assert_eq!(label_value("http://a.test"), "http://a.test");
        assert_eq!(
            label_value("\"} evil_metric 1\nx"),
            "\\\"} evil_metric 1\\nx"
        );
        assert_eq!(label_value("a\\b"), "a\\\\b");
        assert_eq!(label_value("\u{7}é"), "\\\\x07\\\\xc3\\\\xa9");
        assert_eq!(label_value("\r\t"), "\\\\x0d\\\\x09");
    }

    #[test]
    fn negotiation_prefers_openmetrics_only_when_asked() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0, text/plain")),
            Format::Text
        );
    }

    #[test]
    fn counters_are_named_per_format() {
        for (format, ty) in [
            (Format::Text, "# TYPE x_total counter"),
            (Format::OpenMetrics, "# TYPE x counter"),
        ] {
            let mut enc = Encoder::new(format);
            enc.family("x", Kind::Counter, "help");
            enc.sample("x_total", &[("a", "b")], 3);
            let out = enc.finish();
            assert!(out.contains(ty), "{out}");
            assert!(out.contains("x_total{a=\"b\"} 3\n"), "{out}");
            assert_eq!(out.ends_with("# EOF\n"), format == Format::OpenMetrics);
        }
    }
}
