//! The harness's layers, kept by a test: each folder of `harness/src` uses
//! only the folders before it (`model` → `oracle` → `check` → `plan` →
//! `play` → `report` → `run`/`facade`/`exit`), the pure folders do no I/O,
//! and no module of the harness or the models depends on itself through
//! others. Read from the source text: every `crate::…`, `super::…` and
//! `self::…` path, resolved to the file that defines the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first; a module may use its own layer and those
/// before it.
const LAYERS: &[&[&str]] = &[
    &["model"],
    &["oracle"],
    &["check"],
    &["plan"],
    &["play"],
    &["report"],
    &["run", "merge", "facade", "exit", "audit"],
];

/// Layers that must not do I/O (network, processes, databases, an async
/// runtime). Reading a scenario file is the one I/O `plan` does, so files
/// are allowed there.
const PURE: &[&str] = &["model", "oracle", "check", "plan"];
const IO_CRATES: &[&str] = &[
    "tokio::",
    "sqlx::",
    "reqwest::",
    "testcontainers::",
    "axum::",
    "tokio_tungstenite::",
    "std::net::",
    "std::process::",
];

/// A module's path from the crate root (`["play", "driver"]`) and its
/// source, for every `.rs` file under `src`.
fn modules(src: &Path) -> BTreeMap<Vec<String>, String> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    files
        .into_iter()
        .map(|file| {
            let relative = file.strip_prefix(src).expect("under src");
            let mut path: Vec<String> = relative
                .with_extension("")
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect();
            if path
                .last()
                .is_some_and(|last| last == "mod" || last == "lib")
            {
                path.pop();
            }
            let source = std::fs::read_to_string(&file).expect("read a source file");
            (path, source)
        })
        .collect()
}

/// The module paths one source names, resolved from `module`, before
/// matching them to files: `crate::a::b::C` gives `a::b::C`.
fn referenced_paths(module: &[String], source: &str) -> Vec<Vec<String>> {
    let code: String = source
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = Vec::new();
    for (root, base) in [
        ("crate::", Vec::new()),
        ("super::", module[..module.len().saturating_sub(1)].to_vec()),
        ("self::", module.to_vec()),
    ] {
        for (at, _) in code.match_indices(root) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest = &code[at + root.len()..];
            let mut path = base.clone();
            let mut parts = rest.split("::");
            // `super::super::x` climbs once more per `super`.
            let mut climbing = true;
            for part in parts.by_ref() {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if climbing && root == "super::" && name == "super" {
                    path.pop();
                    continue;
                }
                climbing = false;
                if name.is_empty() {
                    // `crate::{a, b}` and `super::{x, y}`: each item.
                    if let Some(group) = part.strip_prefix('{') {
                        let end = rest.find('}').unwrap_or(rest.len());
                        let inside = &rest[rest.find('{').unwrap_or(0) + 1..end];
                        for item in inside.split(',') {
                            let item: String = item
                                .trim()
                                .chars()
                                .take_while(|c| c.is_alphanumeric() || *c == '_')
                                .collect();
                            if !item.is_empty() {
                                let mut grouped = path.clone();
                                grouped.push(item);
                                found.push(grouped);
                            }
                        }
                        let _ = group;
                    }
                    break;
                }
                path.push(name.clone());
                if part.len() != name.len() {
                    break;
                }
            }
            found.push(path);
        }
    }
    found
}

/// The module file a path lands in: its longest prefix that is a module.
fn resolve<'a>(
    path: &[String],
    known: &'a BTreeMap<Vec<String>, String>,
) -> Option<&'a Vec<String>> {
    (1..=path.len())
        .rev()
        .find_map(|length| known.get_key_value(&path[..length]).map(|(key, _)| key))
}

/// Whether a module only declares others and re-exports them (`lib.rs`,
/// `mod.rs`, `report.rs`): such files are left out of the graph, so that a
/// path through a re-export is not a circle.
fn declares_only(module: &[String], source: &str) -> bool {
    module.is_empty()
        || source.lines().all(|line| {
            let line = line.trim();
            line.is_empty()
                || line.starts_with("//")
                || line.starts_with("pub mod ")
                || line.starts_with("mod ")
                || line.starts_with("pub use ")
                || line.starts_with("use ")
                || line.starts_with('#')
                || !line.contains("fn ")
                    && !line.contains("struct ")
                    && !line.contains("enum ")
                    && !line.contains("impl ")
                    && !line.contains("const ")
        })
}

/// Module → the modules it uses (not itself, not declaration files).
fn graph(known: &BTreeMap<Vec<String>, String>) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    known
        .iter()
        .filter(|(module, source)| !declares_only(module, source))
        .map(|(module, source)| {
            let uses = referenced_paths(module, source)
                .iter()
                .filter_map(|path| resolve(path, known))
                .filter(|target| *target != module && !declares_only(target, &known[*target]))
                .cloned()
                .collect();
            (module.clone(), uses)
        })
        .collect()
}

fn layer_of(module: &[String]) -> Option<usize> {
    let top = module.first()?;
    LAYERS
        .iter()
        .position(|layer| layer.contains(&top.as_str()))
}

/// Every use of a later layer by an earlier one, as "a::b uses c::d".
fn backward_imports(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<String> {
    let mut found = Vec::new();
    for (module, uses) in graph {
        let Some(layer) = layer_of(module) else {
            continue;
        };
        for target in uses {
            if layer_of(target).is_some_and(|used| used > layer) {
                found.push(format!("{} uses {}", module.join("::"), target.join("::")));
            }
        }
    }
    found
}

/// Every I/O crate a pure layer names, as "a::b names tokio::".
fn io_in_pure_layers(known: &BTreeMap<Vec<String>, String>) -> Vec<String> {
    let mut found = Vec::new();
    for (module, source) in known {
        if !module
            .first()
            .is_some_and(|top| PURE.contains(&top.as_str()))
        {
            continue;
        }
        for io in IO_CRATES {
            if source.contains(io) {
                found.push(format!("{} names {io}", module.join("::")));
            }
        }
    }
    found
}

/// The circles of the graph (strongly connected parts of two or more).
fn circles(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    let reaches = |from: &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(next) = stack.pop() {
            for target in graph.get(&next).into_iter().flatten() {
                if seen.insert(target.clone()) {
                    stack.push(target.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&Vec<String>, BTreeSet<Vec<String>>> = graph
        .keys()
        .map(|module| (module, reaches(module)))
        .collect();
    let mut circles: BTreeSet<Vec<String>> = BTreeSet::new();
    for (module, reached) in &reach {
        let circle: Vec<String> = reached
            .iter()
            .filter(|other| reach.get(other).is_some_and(|back| back.contains(*module)))
            .map(|other| other.join("::"))
            .collect();
        if circle.len() > 1 {
            circles.insert(circle);
        }
    }
    circles.into_iter().collect()
}

fn crate_src(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The library's modules (the binary's `cli` and `main` are outside the
/// layers: they are the top).
fn harness_modules() -> BTreeMap<Vec<String>, String> {
    let mut known = modules(&crate_src("src"));
    known.retain(|module, _| {
        !module
            .first()
            .is_some_and(|top| top == "cli" || top == "main")
    });
    known
}

#[test]
fn each_layer_uses_only_the_layers_before_it() {
    let known = harness_modules();
    let unplaced: Vec<String> = known
        .keys()
        .filter(|module| !module.is_empty() && layer_of(module).is_none())
        .map(|module| module.join("::"))
        .collect();
    assert!(unplaced.is_empty(), "modules in no layer: {unplaced:?}");
    let backward = backward_imports(&graph(&known));
    assert!(
        backward.is_empty(),
        "backward imports:\n{}",
        backward.join("\n")
    );
}

#[test]
fn the_pure_layers_do_no_io() {
    let found = io_in_pure_layers(&harness_modules());
    assert!(
        found.is_empty(),
        "I/O in a pure layer:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_module_of_the_harness_or_the_models_depends_on_itself() {
    for src in ["src", "../models/runtime/src", "../models/clients/src"] {
        let mut known = modules(&crate_src(src));
        known.retain(|module, _| module.first().is_none_or(|top| top != "bin"));
        let found = circles(&graph(&known));
        assert!(found.is_empty(), "{src}: dependency circles: {found:?}");
    }
}

/// A tree of (path, source) for the planted-defect tests.
fn planted(files: &[(&[&str], &str)]) -> BTreeMap<Vec<String>, String> {
    files
        .iter()
        .map(|(path, source)| {
            (
                path.iter().map(|part| (*part).to_owned()).collect(),
                (*source).to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_planted_backward_import_an_io_call_and_a_circle_are_caught() {
    let tree = planted(&[
        (
            &["model", "case"],
            "use crate::play::driver::Backends;\npub struct Case;\n",
        ),
        (
            &["play", "driver"],
            "use crate::model::case::Case;\npub struct Backends;\n",
        ),
        (
            &["check", "gate"],
            "pub fn decide() { let _ = tokio::spawn(async {}); }\n",
        ),
    ]);
    let graph = graph(&tree);
    assert_eq!(
        backward_imports(&graph),
        vec!["model::case uses play::driver".to_owned()]
    );
    assert_eq!(
        io_in_pure_layers(&tree),
        vec!["check::gate names tokio::".to_owned()]
    );
    assert_eq!(
        circles(&graph),
        vec![vec!["model::case".to_owned(), "play::driver".to_owned()]]
    );
}
