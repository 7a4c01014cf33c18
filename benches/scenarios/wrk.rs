//! HTTP load from outside the process: `wrk`, one thread, on a core of its
//! own where the machine has two or more (the service gets the others), so
//! that the generator costs less than the server and does not share its
//! threads. Requests that need a token or a body are written by a small
//! Lua script.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// What one `wrk` run measured.
#[derive(Debug, Clone, Default)]
pub struct WrkRun {
    pub requests_per_sec: f64,
    /// Latency percentiles, in milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Answers outside 2xx and 3xx, and socket errors: both should be 0.
    pub failed: u64,
}

impl WrkRun {
    pub fn summary(&self) -> String {
        format!(
            "{:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {} failed",
            self.requests_per_sec, self.p50_ms, self.p99_ms, self.failed
        )
    }
}

/// A request `wrk` sends again and again.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: &'static str,
    /// Bearer tokens, used in turn (one per request), or none.
    pub tokens: Vec<String>,
    /// A JSON body, if any.
    pub body: Option<String>,
}

impl Request {
    pub fn get() -> Self {
        Self {
            method: "GET",
            tokens: Vec::new(),
            body: None,
        }
    }

    pub fn with_tokens(mut self, tokens: &[String]) -> Self {
        self.tokens = tokens.to_vec();
        self
    }

    pub fn post_json(body: &serde_json::Value) -> Self {
        Self {
            method: "POST",
            tokens: Vec::new(),
            body: Some(body.to_string()),
        }
    }

    /// The Lua script that makes `wrk` send this request.
    fn script(&self) -> String {
        let quote = |text: &str| format!("{text:?}");
        let tokens: Vec<String> = self.tokens.iter().map(|t| quote(t)).collect();
        let body = self.body.as_deref().map_or("nil".to_owned(), quote);
        format!(
            r#"local tokens = {{ {tokens} }}
local body = {body}
local n = 0
request = function()
  local headers = {{}}
  if body then headers["Content-Type"] = "application/json" end
  if #tokens > 0 then
    n = n % #tokens + 1
    headers["Authorization"] = "Bearer " .. tokens[n]
  end
  return wrk.format("{method}", nil, headers, body)
end
"#,
            tokens = tokens.join(", "),
            method = self.method,
        )
    }
}

/// The cores the load generator and the service are pinned to, if the
/// machine has two or more and `taskset` is there: the generator the last,
/// the service the rest.
#[derive(Debug, Clone)]
pub struct Cores {
    pub service: Option<String>,
    pub generator: Option<String>,
}

impl Cores {
    pub fn split() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let taskset = Command::new("taskset").arg("-V").output().is_ok();
        if cores < 2 || !taskset {
            return Self {
                service: None,
                generator: None,
            };
        }
        Self {
            service: Some(format!("0-{}", cores - 2)),
            generator: Some((cores - 1).to_string()),
        }
    }

    /// How many cores the service has.
    pub fn for_service(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        if self.service.is_some() {
            cores - 1
        } else {
            cores
        }
    }
}

/// Sends `request` to `url` from `connections` keep-alive connections for
/// `duration`.
pub fn run(url: &str, request: &Request, connections: usize, duration: Duration) -> WrkRun {
    let script = script_file(&request.script());
    let mut command = match Cores::split().generator {
        Some(core) => {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", &core, "wrk"]);
            taskset
        }
        None => Command::new("wrk"),
    };
    let seconds = duration.as_secs().max(1).to_string();
    let output = command
        .args(["-t1", "-c", &connections.to_string(), "-d", &seconds])
        .args(["--latency", "--timeout", "10s", "-s"])
        .arg(&script)
        .arg(url)
        .output()
        .expect("wrk runs (`make bench` installs it)");
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {text}");
    parse(&text)
}

/// Reads `wrk --latency`'s report.
fn parse(text: &str) -> WrkRun {
    let mut run = WrkRun::default();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rate] => run.requests_per_sec = rate.parse().unwrap_or(0.0),
            ["50%", latency] => run.p50_ms = millis(latency),
            ["99%", latency] => run.p99_ms = millis(latency),
            ["Non-2xx", "or", "3xx", "responses:", n] => run.failed += n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                run.failed += rest
                    .iter()
                    .filter_map(|word| word.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    run
}

/// `812.00us`, `1.23ms`, `2.00s` in milliseconds.
fn millis(latency: &str) -> f64 {
    let split = latency
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(latency.len());
    let (number, unit) = latency.split_at(split);
    let number: f64 = number.parse().unwrap_or(0.0);
    match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        _ => number,
    }
}

fn script_file(script: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("tollgate-wrk-{}.lua", uuid::Uuid::new_v4()));
    std::fs::write(&path, script).unwrap();
    path
}
