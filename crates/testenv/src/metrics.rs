//! A `/metrics` page (Prometheus text format) read back into samples, so a test asks for a
//! value by metric name and exact labels instead of matching lines by substring.

use std::collections::BTreeMap;

/// One line of the exposition: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name as exposed (with `_total`, `_bucket`, … suffixes).
    pub name: String,
    /// The labels, unescaped.
    pub labels: BTreeMap<String, String>,
    /// The value (a trailing timestamp, if any, is ignored).
    pub value: f64,
}

impl Sample {
    /// Whether this is a sample of `name` that carries every one of `labels` (others may be
    /// present too).
    pub fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name
            && labels
                .iter()
                .all(|(k, v)| self.labels.get(*k).is_some_and(|have| have == v))
    }
}

/// Every sample of a scrape. Comment lines (`# HELP`, `# TYPE`, `# EOF`) and lines that do not
/// parse are skipped.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the text of a scrape.
    pub fn parse(text: &str) -> Self {
        Self {
            samples: text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .filter_map(parse_line)
                .collect(),
        }
    }

    /// All samples, in page order.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The value of the first sample of `name` carrying all `labels`, if there is one.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.matches(name, labels))
            .map(|s| s.value)
    }

    /// The sum over every sample of `name` carrying all `labels` (0 when there is none), e.g. a
    /// counter across the values of a label the test does not pin.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.matches(name, labels))
            .map(|s| s.value)
            .sum()
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(mut s) = rest.strip_prefix('{') {
        loop {
            s = s.trim_start_matches([',', ' ']);
            if let Some(after) = s.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = s.split_once('=')?;
            let quoted = after.strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i + 1,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        escaped => value.push(escaped),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.trim().to_owned(), value);
            s = &quoted[end..];
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP sealed_secrets_controller_unseal_errors_total Errors.
# TYPE sealed_secrets_controller_unseal_errors_total counter
sealed_secrets_controller_unseal_errors_total{reason="update",namespace="a"} 2
sealed_secrets_controller_unseal_errors_total{namespace="b",reason="update"} 3
sealed_secrets_controller_unseal_errors_total{reason="unseal",namespace="a"} 5
sealed_secrets_controller_is_leader 1
odd{msg="a \"quoted\", comma\\ and }brace",le="+Inf"} +Inf 1700000000
# EOF
"#;

    #[test]
    fn get_finds_the_first_sample_with_exact_labels() {
        let m = Metrics::parse(PAGE);
        let name = "sealed_secrets_controller_unseal_errors_total";
        assert_eq!(m.get(name, &[("namespace", "b")]), Some(3.0));
        assert_eq!(m.get(name, &[("reason", "update")]), Some(2.0));
        assert_eq!(
            m.get(name, &[("reason", "upd")]),
            None,
            "no substring match"
        );
        assert_eq!(m.get("sealed_secrets_controller_is_leader", &[]), Some(1.0));
        assert_eq!(
            m.get("sealed_secrets_controller_is", &[]),
            None,
            "no prefix match"
        );
    }

    #[test]
    fn sum_adds_every_matching_sample() {
        let m = Metrics::parse(PAGE);
        let name = "sealed_secrets_controller_unseal_errors_total";
        assert_eq!(m.sum(name, &[("reason", "update")]), 5.0);
        assert_eq!(m.sum(name, &[]), 10.0);
        assert_eq!(m.sum(name, &[("namespace", "c")]), 0.0);
    }

    #[test]
    fn quoted_label_values_are_unescaped() {
        let m = Metrics::parse(PAGE);
        let odd = m.samples().iter().find(|s| s.name == "odd").unwrap();
        assert_eq!(odd.labels["msg"], r#"a "quoted", comma\ and }brace"#);
        assert_eq!(odd.labels["le"], "+Inf");
        assert_eq!(odd.value, f64::INFINITY);
        assert_eq!(m.samples().len(), 5);
    }
}
