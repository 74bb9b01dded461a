//! The shape of the code, checked on every test run: no source file over 800 lines and no
//! function over 120 outside tests, and no import circle among a crate's modules (the agent's
//! had one of five files, which is how a codebase stops being one a newcomer can read a part
//! of). Test code (`tests/`, `#[cfg(test)]` modules) is left out of the sizes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 800;
const MAX_FN_LINES: usize = 120;

/// The workspace's crates, by their source directory.
const CRATES: &[&str] = &[
    "api/src",
    "transport/src",
    "controller/src",
    "agent/src",
    "runtime/src",
    "src",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The lines of a file without its test code: an inline `#[cfg(test)] mod ... { ... }`
/// (rustfmt'd: it ends with a `}` at its indentation), or test items declared on one line.
fn code_lines(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != "#[cfg(test)]" {
            out.push(lines[i]);
            i += 1;
            continue;
        }
        let Some(item) = lines.get(i + 1) else {
            break;
        };
        if item.trim_end().ends_with('{') {
            let indent = item.len() - item.trim_start().len();
            let close = format!("{}}}", " ".repeat(indent));
            let end = (i + 2..lines.len())
                .find(|&j| lines[j].trim_end() == close)
                .unwrap_or(lines.len() - 1);
            i = end + 1;
        } else {
            i += 2;
        }
    }
    out
}

/// The name of the function a line declares, if it declares one.
fn declared_fn(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("fn ")?;
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some(&rest[..end]).filter(|n| !n.is_empty())
}

/// Every function longer than [`MAX_FN_LINES`] in `lines` (rustfmt'd: a body ends with a `}`
/// at the indentation of its `fn`): its name and length.
fn long_functions(lines: &[&str]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(name) = declared_fn(lines[i]) else {
            i += 1;
            continue;
        };
        let indent = lines[i].len() - lines[i].trim_start().len();
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';')
        }) else {
            break;
        };
        if lines[open].trim_end().ends_with(';') {
            i = open + 1;
            continue;
        }
        let close = format!("{}}}", " ".repeat(indent));
        let end = (open + 1..lines.len())
            .find(|&j| lines[j].trim_end() == close)
            .unwrap_or(lines.len() - 1);
        let length = end - i + 1;
        if length > MAX_FN_LINES {
            out.push((name.to_string(), length));
        }
        i = end + 1;
    }
    out
}

#[test]
fn no_file_or_function_is_too_long() {
    let mut files = Vec::new();
    for dir in CRATES.iter().chain(&["benches"]) {
        rust_files(&root().join(dir), &mut files);
    }
    let mut problems = Vec::new();
    // A module's tests in a file of their own (`mod tests;`) are test code too.
    files.retain(|f| f.file_name().is_none_or(|n| n != "tests.rs"));
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read a source file");
        let lines = code_lines(&text);
        let shown = f.strip_prefix(root()).unwrap_or(f).display().to_string();
        if lines.len() > MAX_FILE_LINES {
            problems.push(format!(
                "{shown}: {} lines (at most {MAX_FILE_LINES})",
                lines.len()
            ));
        }
        for (name, length) in long_functions(&lines) {
            problems.push(format!(
                "{shown}: fn {name} is {length} lines (at most {MAX_FN_LINES})"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "split these:\n  {}",
        problems.join("\n  ")
    );
}

/// A crate's top-level modules and what each refers to of the others through `crate::`.
/// Items the crate root re-exports (`pub use m::Item`) count as module `m`'s; anything else
/// at the root as the root's (`crate`).
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let root_file = ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .find(|p| p.exists())
        .expect("a crate root");
    let root_text = std::fs::read_to_string(&root_file).expect("read the crate root");
    let mut modules = BTreeSet::new();
    let mut reexports: BTreeMap<String, String> = BTreeMap::new();
    for line in root_text.lines() {
        let l = line.trim();
        if let Some(m) = l
            .strip_prefix("pub mod ")
            .or_else(|| l.strip_prefix("mod "))
            .and_then(|m| m.strip_suffix(';'))
        {
            modules.insert(m.to_string());
        }
        if let Some(rest) = l.strip_prefix("pub use ") {
            if let Some((module, items)) = rest.split_once("::") {
                let items = items.trim_end_matches(';');
                let items = items.trim_start_matches('{').trim_end_matches('}');
                for item in items.split(',') {
                    let item = item.trim();
                    let name = item.rsplit(" as ").next().unwrap_or(item).trim();
                    reexports.insert(name.to_string(), module.to_string());
                }
            }
        }
    }
    let resolve = |name: &str| -> String {
        if modules.contains(name) {
            name.to_string()
        } else if let Some(m) = reexports.get(name) {
            m.clone()
        } else {
            "crate".to_string()
        }
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.insert("crate".into(), modules.clone());
    for m in &modules {
        let mut files = Vec::new();
        let single = src.join(format!("{m}.rs"));
        if single.exists() {
            files.push(single);
        }
        rust_files(&src.join(m), &mut files);
        let mut uses = BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read a source file");
            for path in crate_paths(&text) {
                let target = resolve(&path);
                if &target != m {
                    uses.insert(target);
                }
            }
        }
        graph.insert(m.clone(), uses);
    }
    graph
}

/// The first segment of every `crate::` path in `text`, braces of a grouped `use` included.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `shoal_crate::`, not `crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let first = item.trim().split("::").next().unwrap_or("").trim();
                if !first.is_empty() {
                    out.push(first.to_string());
                }
            }
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end > 0 {
            out.push(rest[..end].to_string());
        }
    }
    out
}

/// A circle in `graph`, if it has one: the modules on it, in order.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_agents_modules_import_no_circle() {
    let graph = module_graph(&root().join("agent/src"));
    assert!(
        graph.len() > 10,
        "the agent's modules were found: {graph:?}"
    );
    if let Some(c) = circle(&graph) {
        panic!(
            "the agent's modules import in a circle: {} (meet through a trait or a module \
             both use instead)",
            c.join(" -> ")
        );
    }
}

#[test]
fn the_checks_find_what_they_look_for() {
    let long: Vec<String> = std::iter::once("    pub async fn big(x: u8) {".to_string())
        .chain((0..MAX_FN_LINES).map(|i| format!("        let _{i} = x;")))
        .chain(std::iter::once("    }".to_string()))
        .chain([
            "    fn declared(&self);".to_string(),
            "fn small() {}".to_string(),
        ])
        .collect();
    let lines: Vec<&str> = long.iter().map(String::as_str).collect();
    assert_eq!(
        long_functions(&lines),
        vec![("big".to_string(), MAX_FN_LINES + 2)]
    );
    let text = "fn a() {}\n#[cfg(test)]\nmod tests;\nfn b() {}\n#[cfg(test)]\nmod t {\n    fn c() {}\n}\nfn d() {}";
    assert_eq!(code_lines(text), ["fn a() {}", "fn b() {}", "fn d() {}"]);
    assert_eq!(
        crate_paths(
            "use crate::{pod::Supervisor, sync::lock};\nlet x = crate::node::now(); shoal_crate::x"
        ),
        vec!["pod", "sync", "node"]
    );
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), ["b".to_string()].into()),
        ("b".to_string(), ["c".to_string()].into()),
        ("c".to_string(), ["a".to_string()].into()),
    ]
    .into();
    assert_eq!(
        circle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let mut open = graph.clone();
    open.insert("c".into(), BTreeSet::new());
    assert_eq!(circle(&open), None);
}
