//! `GET /metrics` over a real socket, parsed: the API server (OpenMetrics)
//! and the collector (Prometheus text) both expose prometheus-client's text
//! format. [`scrape`] fails the test on a non-200 answer, a line that is
//! neither a comment nor `series value`, or a sample whose family has no
//! `# TYPE`; [`Scrape::value`] reads one series, failing with every series
//! there is when it is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// One answer of `/metrics`.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The `Content-Type` header (lowercase).
    pub content_type: String,
    /// The body as served.
    pub text: String,
    /// Samples by series (`name{labels}` as written).
    samples: BTreeMap<String, f64>,
    /// Metric families by name, with their type.
    families: BTreeMap<String, String>,
}

/// GETs `/metrics` from `addr` and parses it.
pub async fn scrape(addr: SocketAddr) -> Scrape {
    let response = crate::http::get(addr, "/metrics").await;
    assert_eq!(
        response.status, 200,
        "{addr}/metrics answered {}: {}",
        response.status, response.body
    );
    parse(response.content_type, &response.body)
}

/// Parses an exposition text (see the module doc for what fails).
pub fn parse(content_type: String, text: &str) -> Scrape {
    let mut samples = BTreeMap::new();
    let mut families = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad TYPE line: {line}"));
            families.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not `series value`: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
        let name = series.split('{').next().unwrap_or(series);
        let labels = &series[name.len()..];
        assert!(
            labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
            "bad labels: {line}"
        );
        assert!(
            family_of(name, &families).is_some(),
            "sample without a # TYPE of its family: {line}"
        );
        samples.insert(series.to_string(), value);
    }
    Scrape {
        content_type,
        text: text.to_string(),
        samples,
        families,
    }
}

/// The family a sample name belongs to: itself, or itself without the suffix
/// OpenMetrics adds (`_total` of a counter, `_bucket`/`_sum`/`_count` of a
/// histogram, `_created`, `_info`).
fn family_of<'a>(name: &'a str, families: &BTreeMap<String, String>) -> Option<&'a str> {
    if families.contains_key(name) {
        return Some(name);
    }
    ["_total", "_bucket", "_sum", "_count", "_created", "_info"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|family| families.contains_key(*family))
}

impl Scrape {
    /// The value of a series (`name` or `name{labels}` exactly as served);
    /// fails listing every series when there is none.
    pub fn value(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no series {series}; have:\n{:#?}", self.samples))
    }

    /// The value of a series, if served.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    /// Every sample, by series.
    pub fn samples(&self) -> &BTreeMap<String, f64> {
        &self.samples
    }

    /// The series names as PromQL sees them, whether or not they have a
    /// sample yet: a counter family `x` is `x_total`, a histogram `x` is
    /// `x_bucket`, `x_sum` and `x_count`; other families their own name.
    pub fn series_names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for (name, kind) in &self.families {
            match kind.as_str() {
                "counter" if !name.ends_with("_total") => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    names.insert(name.clone());
                }
            }
        }
        for series in self.samples.keys() {
            names.insert(series.split('{').next().unwrap_or(series).to_string());
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS: &str = "# HELP x_requests Requests.\n# TYPE x_requests counter\n\
        x_requests_total{kind=\"a\"} 3\n# TYPE x_latency histogram\n\
        x_latency_bucket{le=\"+Inf\"} 1\nx_latency_sum 0.5\nx_latency_count 1\n\
        # TYPE x_up gauge\nx_up 1\n# EOF\n";

    #[test]
    fn samples_and_series_names_of_both_formats() {
        let m = parse("application/openmetrics-text".into(), OPENMETRICS);
        assert_eq!(m.value(r#"x_requests_total{kind="a"}"#), 3.0);
        assert_eq!(m.value("x_latency_count"), 1.0);
        assert_eq!(m.get("x_absent"), None);
        let names: Vec<String> = m.series_names().into_iter().collect();
        assert_eq!(
            names,
            [
                "x_latency_bucket",
                "x_latency_count",
                "x_latency_sum",
                "x_requests_total",
                "x_up"
            ]
        );
        // Prometheus text: the counter's TYPE carries `_total`.
        let m = parse("text/plain".into(), "# TYPE c_total counter\nc_total 2\n");
        assert_eq!(m.value("c_total"), 2.0);
        assert_eq!(
            m.series_names().into_iter().collect::<Vec<_>>(),
            ["c_total"]
        );
    }

    #[test]
    #[should_panic(expected = "sample without a # TYPE")]
    fn a_sample_without_its_type_fails() {
        parse(String::new(), "untyped_thing 1\n");
    }

    #[test]
    #[should_panic(expected = "no series y; have")]
    fn a_missing_series_fails_listing_what_there_is() {
        parse(String::new(), "# TYPE x gauge\nx 1\n").value("y");
    }
}
