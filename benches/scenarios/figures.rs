//! A figure, its baseline and its goal; the table and the JSON file.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::Plan;

/// What a figure must reach.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "on", rename_all = "snake_case")]
pub enum Goal {
    /// figure ÷ baseline at least this.
    RatioAtLeast { target: f64 },
    /// figure ÷ baseline at most this.
    RatioAtMost { target: f64 },
    /// The figure itself at least this.
    ValueAtLeast { target: f64 },
    /// The figure itself at most this.
    ValueAtMost { target: f64 },
}

impl Goal {
    fn met(self, value: f64, ratio: f64) -> bool {
        match self {
            Goal::RatioAtLeast { target } => ratio >= target,
            Goal::RatioAtMost { target } => ratio <= target,
            Goal::ValueAtLeast { target } => value >= target,
            Goal::ValueAtMost { target } => value <= target,
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Goal::RatioAtLeast { target } => format!("ratio ≥ {target}"),
            Goal::RatioAtMost { target } => format!("ratio ≤ {target}"),
            Goal::ValueAtLeast { target } => format!("≥ {target} {unit}"),
            Goal::ValueAtMost { target } => format!("≤ {target} {unit}"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub scenario: &'static str,
    pub name: &'static str,
    pub value: f64,
    pub unit: &'static str,
    pub baseline_name: &'static str,
    pub baseline: f64,
    pub ratio: f64,
    pub goal: Goal,
    pub met: bool,
    /// What else the run saw, for the reader of the JSON file.
    pub notes: String,
}

impl Figure {
    pub fn new(
        scenario: &'static str,
        name: &'static str,
        (value, unit): (f64, &'static str),
        (baseline_name, baseline): (&'static str, f64),
        goal: Goal,
        notes: String,
    ) -> Self {
        let ratio = if baseline > 0.0 {
            value / baseline
        } else {
            f64::NAN
        };
        let figure = Self {
            scenario,
            name,
            value,
            unit,
            baseline_name,
            baseline,
            ratio,
            met: goal.met(value, ratio),
            goal,
            notes,
        };
        eprintln!(
            "  {scenario:>3} {name}: {} ({baseline_name}: {}) ratio {ratio:.3}{}",
            number(value, unit),
            number(baseline, unit),
            if figure.notes.trim().is_empty() {
                String::new()
            } else {
                format!("; {}", figure.notes)
            }
        );
        figure
    }
}

fn number(value: f64, unit: &str) -> String {
    let digits = if value >= 100.0 {
        0
    } else if value >= 1.0 {
        2
    } else {
        3
    };
    format!("{value:.digits$} {unit}").trim_end().to_owned()
}

/// Prints the table and writes `target/bench/results.json`.
pub fn report(figures: &[Figure], plan: Plan, took: Duration) {
    println!();
    println!(
        "| # | figure | value | baseline | ratio | goal | met |\n|---|---|---|---|---|---|---|"
    );
    for f in figures {
        let (baseline, ratio) = if f.ratio.is_finite() {
            (
                format!("{}: {}", f.baseline_name, number(f.baseline, f.unit)),
                format!("{:.2}", f.ratio),
            )
        } else {
            ("—".to_owned(), "—".to_owned())
        };
        println!(
            "| {} | {} | {} | {baseline} | {ratio} | {} | {} |",
            f.scenario,
            f.name,
            number(f.value, f.unit),
            f.goal.describe(f.unit),
            if f.met { "yes" } else { "no" }
        );
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("results.json");
    let results = json!({
        "quick": plan.quick,
        "cores": tollgate::config::threads_or_cores(0),
        "seconds": took.as_secs_f64(),
        "at": chrono::Utc::now().to_rfc3339(),
        "figures": figures,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&results).unwrap()).unwrap();
    println!(
        "\n{} of {} goals met in {:.0?}; written to {}",
        figures.iter().filter(|f| f.met).count(),
        figures.len(),
        took,
        path.display()
    );
}
