//! A `/metrics` scrape, read the way Prometheus reads it.

use std::collections::BTreeMap;

/// One scrape: every sample, by metric name and labels.
#[derive(Debug)]
pub struct Scrape {
    pub text: String,
    samples: Vec<Sample>,
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Scrape {
    pub fn parse(text: String) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => (name, labels.trim_end_matches('}')),
                    None => (series, ""),
                };
                Sample {
                    name: name.to_owned(),
                    labels: parse_labels(labels),
                    value: value.parse().expect("a sample's value is a number"),
                }
            })
            .collect();
        Self { text, samples }
    }

    /// The value of the sample named `name` whose labels include `labels`;
    /// the sum when several match.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
            })
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// Every metric name in the scrape.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.samples.iter().map(|s| s.name.as_str())
    }

    /// Every label value in the scrape.
    pub fn label_values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.samples
            .iter()
            .flat_map(|s| s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

/// `a="x",b="y"` (values may hold escaped quotes and commas).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        rest = &after[end..];
    }
    labels
}
