//! The engine's modules form one-way layers (see `engine/src/lib.rs`): this reads every
//! source file and fails if an import points upwards or two modules import each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first (the order `engine/src/lib.rs` gives).
const LAYERS: &[&[&str]] = &[
    &["base", "frame", "limits", "version", "metrics", "shutdown"],
    &["storage"],
    &["replication"],
    &["engine"],
    &["admin", "resp"],
    &["expiry", "server"],
    &["cli", "main", "lib"],
];

/// Items `lib.rs` re-exports at the crate root, with the module they come from.
const ROOT_REEXPORTS: &[(&str, &str)] = &[("VERSION", "version")];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `storage/writer.rs` → `storage`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("file under src");
    let first = rel.components().next().expect("non-empty path");
    first.as_os_str().to_string_lossy().trim_end_matches(".rs").to_string()
}

/// Top-level modules a file names through `crate::`, outside comments.
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        assert!(
            !code.contains("crate::{"),
            "group imports from crate:: hide layers; write one path each: {line}"
        );
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                let module =
                    ROOT_REEXPORTS.iter().find(|(item, _)| *item == name).map(|(_, m)| m.to_string());
                out.insert(module.unwrap_or(name));
            }
            rest = after;
        }
    }
    out
}

#[test]
fn imports_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 20, "found only {} source files under {}", files.len(), src.display());
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let Some(own) = layer_of(&module) else {
            wrong.push(format!(
                "{}: module `{module}` is in no layer; add it to lib.rs and this test",
                file.display()
            ));
            continue;
        };
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        for dep in imports(&text) {
            if dep == module {
                continue;
            }
            match layer_of(&dep) {
                Some(layer) if layer <= own => {
                    graph.entry(module.clone()).or_default().insert(dep);
                }
                Some(layer) => wrong.push(format!(
                    "{}: `{module}` (layer {own}) imports `{dep}` (layer {layer}), which is above it",
                    file.display()
                )),
                None => {
                    wrong.push(format!("{}: imports `crate::{dep}`, which is in no layer", file.display()))
                }
            }
        }
    }
    // Within a layer, no two modules may depend on each other, directly or through others.
    for (module, deps) in &graph {
        for dep in deps {
            if reaches(&graph, dep, module, &mut BTreeSet::new()) {
                wrong.push(format!("`{module}` and `{dep}` import each other (a cycle)"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports that break the layers:\n{}", wrong.join("\n"));
}

fn reaches(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> bool {
    if from == to {
        return true;
    }
    if !seen.insert(from.to_string()) {
        return false;
    }
    graph.get(from).is_some_and(|deps| deps.iter().any(|d| reaches(graph, d, to, seen)))
}

#[test]
fn the_checker_sees_upward_and_grouped_imports() {
    let found =
        imports("use crate::storage::Store;\nlet x = crate::server::run(); // crate::cli in a comment\n");
    assert_eq!(found, BTreeSet::from(["storage".to_string(), "server".to_string()]));
    assert!(layer_of("storage") < layer_of("replication"));
    assert!(std::panic::catch_unwind(|| imports("use crate::{a, b};")).is_err());
}
