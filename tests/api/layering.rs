//! The layering rules of the README's invariants, checked against the
//! sources themselves: every `crate::…` path a module of `src/` names
//! (in `use` lines and in code), and every `super::…` between the modules
//! of the task side.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each layer must not reach: `(layer, [modules it must not name])`.
const RULES: &[(&str, &[&str])] = &[
    (
        "domain",
        &[
            "storage",
            "actors",
            "http",
            "config",
            "accounts",
            "app",
            "events",
            "telemetry",
            "tasks",
            "auth",
        ],
    ),
    ("storage", &["actors", "http", "accounts", "app"]),
    ("actors", &["http", "accounts", "app"]),
    ("accounts", &["http", "app"]),
    ("http", &["storage", "app"]),
    (
        "config",
        &[
            "storage",
            "telemetry",
            "actors",
            "http",
            "accounts",
            "app",
            "events",
            "tasks",
        ],
    ),
];

/// The modules of the task side, which must form a chain without loops.
const TASK_SIDE: &str = "actors/queue";

/// A source file: its path under `src/` and its text.
struct Source {
    path: PathBuf,
    text: String,
}

impl Source {
    /// The crate module the file belongs to: `src/http/tasks.rs` → `http`.
    fn layer(&self) -> String {
        let first = self.path.iter().next().unwrap().to_string_lossy();
        first.trim_end_matches(".rs").to_owned()
    }

    /// The text without comments, so that prose naming a module is not
    /// taken for a use of it.
    fn code(&self) -> String {
        self.text
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The top-level crate modules this file names, as in
    /// `crate::storage::X` or `use crate::{storage, telemetry::Y}`.
    fn crate_modules(&self) -> BTreeSet<String> {
        let code = self.code();
        let mut named = BTreeSet::new();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                named.extend(top_level_names(group));
            } else {
                named.insert(identifier(rest));
            }
        }
        named
    }
}

/// The first identifier of `text`.
fn identifier(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The first name of each path in a `{…}` group (up to its closing brace).
fn top_level_names(group: &str) -> Vec<String> {
    let (mut depth, mut names, mut expecting) = (0, Vec::new(), true);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expecting = true,
            c if expecting && (c.is_alphanumeric() || c == '_') => {
                names.push(identifier(&group[i..]));
                expecting = false;
            }
            _ => {}
        }
    }
    names
}

/// Every rule the sources break, in words.
fn violations(sources: &[Source]) -> Vec<String> {
    let mut found = Vec::new();
    for source in sources {
        let layer = source.layer();
        let Some((_, banned)) = RULES.iter().find(|(name, _)| *name == layer) else {
            continue;
        };
        for module in source.crate_modules() {
            if banned.contains(&module.as_str()) {
                found.push(format!(
                    "{} ({layer}) names crate::{module}",
                    source.path.display()
                ));
            }
        }
    }
    found.extend(task_side_loops(sources));
    found
}

/// Loops among the task side's modules: `super::x` from one child to a
/// sibling, or to their parent (`mod.rs`), and the parent's own `x::`.
fn task_side_loops(sources: &[Source]) -> Vec<String> {
    let side: Vec<&Source> = sources
        .iter()
        .filter(|s| s.path.starts_with(TASK_SIDE))
        .collect();
    let name = |s: &Source| s.path.file_stem().unwrap().to_string_lossy().into_owned();
    let children: BTreeSet<String> = side.iter().map(|s| name(s)).collect();
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for source in &side {
        let (from, code) = (name(source), source.code());
        let edges = imports.entry(from.clone()).or_default();
        if from == "mod" {
            for child in &children {
                if names_path(&code, child) {
                    edges.insert(child.clone());
                }
            }
        } else {
            for (at, _) in code.match_indices("super::") {
                let target = identifier(&code[at + "super::".len()..]);
                let target = if children.contains(&target) {
                    target
                } else {
                    "mod".to_owned()
                };
                edges.insert(target);
            }
        }
    }
    let mut loops = Vec::new();
    for start in imports.keys() {
        if let Some(path) = path_back(&imports, start) {
            loops.push(format!("{TASK_SIDE}: {}", path.join(" imports ")));
        }
    }
    loops
}

/// Whether `code` has a path starting `module::` (not `other_module::`).
fn names_path(code: &str, module: &str) -> bool {
    code.match_indices(&format!("{module}::")).any(|(at, _)| {
        !code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
    })
}

/// A chain of imports from `start` that leads back to it, if any.
fn path_back(imports: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in imports.get(last).into_iter().flatten() {
            let mut longer = path.clone();
            longer.push(next.clone());
            if next == start {
                return Some(longer);
            }
            if seen.insert(next.clone()) {
                stack.push(longer);
            }
        }
    }
    None
}

/// Every `.rs` file under `dir`, with its path relative to `root`.
fn read_sources(root: &Path, dir: &Path, into: &mut Vec<Source>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_sources(root, &path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(Source {
                text: std::fs::read_to_string(&path).unwrap(),
                path: path.strip_prefix(root).unwrap().to_owned(),
            });
        }
    }
}

fn source(path: &str, text: &str) -> Source {
    Source {
        path: path.into(),
        text: text.into(),
    }
}

#[test]
fn every_layer_keeps_to_its_rules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = Vec::new();
    read_sources(&root, &root, &mut sources);
    assert!(
        sources.iter().any(|s| s.path.starts_with(TASK_SIDE)),
        "the task side is where the rules expect it"
    );

    let broken = violations(&sources);

    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn a_broken_rule_is_found_in_use_lines_groups_and_code() {
    let sources = [
        source("http/tasks.rs", "use crate::storage::StoreError;\n"),
        source(
            "config/mod.rs",
            "use crate::{\n    clock::Clock,\n    telemetry,\n};\n",
        ),
        source(
            "domain/task.rs",
            "fn f() { crate::actors::Queue::start(); }\n",
        ),
        // Prose is not a use.
        source("storage/mod.rs", "//! Unlike crate::actors, this ...\n"),
    ];

    let broken = violations(&sources);

    assert_eq!(broken.len(), 3, "{broken:?}");
    assert!(broken[0].contains("crate::storage"), "{broken:?}");
    assert!(broken[1].contains("crate::telemetry"), "{broken:?}");
    assert!(broken[2].contains("crate::actors"), "{broken:?}");
}

#[test]
fn a_loop_on_the_task_side_is_found() {
    let sources = [
        source(
            "actors/queue/mod.rs",
            "mod router;\nuse router::QueueRouter;\nuse parts::QueueParts;\n",
        ),
        source("actors/queue/router.rs", "use super::manager::Enqueue;\n"),
        source("actors/queue/manager.rs", "use super::router::Retire;\n"),
        source("actors/queue/parts.rs", "use super::Queue;\n"),
    ];

    let broken = violations(&sources).join("\n");

    assert!(
        broken.contains("manager imports router imports manager"),
        "{broken}"
    );
    assert!(
        broken.contains("parts imports mod imports parts"),
        "{broken}"
    );
}
