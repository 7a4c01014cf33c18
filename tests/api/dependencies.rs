//! The locked dependency versions: none of those with a known advisory
//! that reaches Tollgate. `Cargo.lock` is what a build compiles, so a
//! `cargo update` that went backwards, or a feature that pulled a crate
//! back in, fails here rather than in an audit after release.

use std::cmp::Ordering;

/// A crate, the first version free of the advisory (`None`: no fixed
/// version exists, the crate must not be in the build at all), and why.
const ADVISORIES: &[(&str, Option<&str>, &str)] = &[
    (
        "actix-http",
        Some("3.12.1"),
        "HTTP/1 request smuggling through an ambiguous Content-Length/Transfer-Encoding",
    ),
    (
        "time",
        Some("0.3.47"),
        "RUSTSEC-2026-0009: stack exhaustion parsing RFC 2822",
    ),
    (
        "rsa",
        None,
        "RUSTSEC-2023-0071: Marvin timing attack, no fixed version",
    ),
];

/// Every `(name, version)` a lockfile names.
fn locked(lockfile: &str) -> Vec<(String, String)> {
    let quoted = |line: &str, key: &str| {
        line.strip_prefix(key)
            .map(|rest| rest.trim().trim_matches('"').to_owned())
    };
    let mut packages = Vec::new();
    let mut name = None;
    for line in lockfile.lines() {
        if line == "[[package]]" {
            name = None;
        } else if let Some(found) = quoted(line, "name = ") {
            name = Some(found);
        } else if let (Some(version), Some(name)) = (quoted(line, "version = "), name.take()) {
            packages.push((name, version));
        }
    }
    packages
}

/// Compares dotted versions numerically (`3.9.0` < `3.12.1`).
fn compare(a: &str, b: &str) -> Ordering {
    let parts = |v: &str| -> Vec<u64> {
        v.split(['.', '-', '+'])
            .map_while(|part| part.parse().ok())
            .collect()
    };
    parts(a).cmp(&parts(b))
}

/// One line for each locked package that an advisory reaches.
fn vulnerable(lockfile: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (name, version) in locked(lockfile) {
        for (crate_name, fixed, why) in ADVISORIES {
            if name != *crate_name {
                continue;
            }
            let reached = fixed.is_none_or(|fixed| compare(&version, fixed) == Ordering::Less);
            if reached {
                let wanted = fixed.map_or("none in the build".into(), |v| format!("≥ {v}"));
                found.push(format!("{name} {version} ({wanted}): {why}"));
            }
        }
    }
    found
}

#[test]
fn no_locked_version_is_one_an_advisory_reaches() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock");
    let lockfile = std::fs::read_to_string(path).expect("Cargo.lock is committed");
    assert!(
        locked(&lockfile)
            .iter()
            .any(|(name, _)| name == "actix-http"),
        "the lockfile was read"
    );
    let found = vulnerable(&lockfile);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_check_catches_each_advisory() {
    let lockfile = |name: &str, version: &str| {
        format!(
            "version = 4\n\n[[package]]\nname = \"{name}\"\nversion = \"{version}\"\n\
             source = \"registry+https://github.com/rust-lang/crates.io-index\"\n"
        )
    };
    assert_eq!(vulnerable(&lockfile("actix-http", "3.11.2")).len(), 1);
    assert_eq!(vulnerable(&lockfile("actix-http", "3.9.0")).len(), 1);
    assert!(vulnerable(&lockfile("actix-http", "3.12.1")).is_empty());
    assert!(vulnerable(&lockfile("actix-http", "3.20.0")).is_empty());
    assert_eq!(vulnerable(&lockfile("time", "0.3.45")).len(), 1);
    assert!(vulnerable(&lockfile("time", "0.3.47")).is_empty());
    assert_eq!(vulnerable(&lockfile("rsa", "0.9.10")).len(), 1);
    assert!(vulnerable(&lockfile("actix-web", "4.0.0")).is_empty());
}
