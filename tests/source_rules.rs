//! Rules of the source tree that the compiler does not check:
//! - the modules of src/ import each other without a cycle: a new `use
//!   crate::x` that closes one fails here, naming the cycle. Edges are read
//!   from the text (`crate::x`, `crate::{x, y::z}`, and the root's
//!   re-exports such as `crate::Error`), which is all the check needs;
//! - message type bytes are named (`protocol::frontend::SYNC`), never
//!   written as `b'S'`, outside the protocol module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level module a source file belongs to.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// The re-exports of lib.rs: `pub use x::{A, B};` maps A and B to x.
fn root_exports(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let rest = rest.trim_end_matches(';');
        let Some((module, items)) = rest.split_once("::") else {
            continue;
        };
        for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
            out.insert(item.trim().to_string(), module.to_string());
        }
    }
    out
}

/// The first path segment of every `crate::` reference in `text`.
fn references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let seg: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !seg.is_empty() {
                    out.push(seg);
                }
            }
        } else {
            let seg: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !seg.is_empty() {
                out.push(seg);
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let exports = root_exports(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(from) = module_of(&src, f) else {
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        let deps = g.entry(from.clone()).or_default();
        for r in references(&text) {
            let to = exports.get(&r).cloned().unwrap_or(r);
            if to != from && modules.contains(&to) {
                deps.insert(to);
            }
        }
    }
    g
}

/// A cycle through `node`, if the DFS from it finds one.
fn find_cycle(
    g: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|n| n == node) {
        let mut cycle = path[i..].to_vec();
        cycle.push(node.to_string());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_string());
    for next in g.get(node).into_iter().flatten() {
        if let Some(c) = find_cycle(g, next, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(node.to_string());
    None
}

#[test]
fn src_modules_form_no_cycle() {
    let g = graph();
    assert!(g.len() > 10, "modules found: {g:?}");
    let mut done = BTreeSet::new();
    for node in g.keys() {
        if let Some(cycle) = find_cycle(&g, node, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_reader_sees_grouped_and_reexported_imports() {
    let refs = references("use crate::{net::Conn, pool};\nlet e = crate::Error::Internal;");
    assert_eq!(refs, ["net", "pool", "Error"]);
    let ex = root_exports("pub use error::{Error, Result};\npub use app::Tidepool;\n");
    assert_eq!(ex.get("Error").map(String::as_str), Some("error"));
    assert_eq!(ex.get("Tidepool").map(String::as_str), Some("app"));
}

#[test]
fn message_tags_are_named_outside_the_protocol_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for f in files {
        if f.starts_with(src.join("protocol")) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        // Unit tests may spell message sequences as byte strings.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            let b = line.as_bytes();
            let bare = b.windows(4).any(|w| {
                w[0] == b'b' && w[1] == b'\'' && w[2].is_ascii_alphanumeric() && w[3] == b'\''
            });
            if bare && !line.trim_start().starts_with("//") {
                found.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "bare tag literals:\n{}", found.join("\n"));
}
