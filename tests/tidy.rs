//! Docs that cannot drift: every source file of the host crates and every
//! test file is named in docs/architecture.md, and every path the README
//! and docs/ link or cite exists. (rust-analyzer's `xtask/src/tidy.rs` is
//! the model: a plain test over the tree, no build needed.)

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The repository's root (this test is a target of `host/addonhost-cli`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every file under `dir` whose name ends with `ext`, relative to `dir`.
fn files(dir: &Path, ext: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(ext) {
                let rel = path.strip_prefix(dir).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

/// Whether the module map names `rel` (a path under a crate's `src/`): by
/// its path, or by its folder (`platform/osb/`) and its name (`catalog`,
/// `` `catalog.rs` ``) — the map may describe a folder's files in one row.
fn named(map: &str, rel: &str) -> bool {
    if map.contains(&format!("`{rel}`")) || map.contains(&format!("{rel} ")) {
        return true;
    }
    let (dir, file) = match rel.rsplit_once('/') {
        Some((dir, file)) => (format!("{dir}/"), file),
        None => (String::new(), rel),
    };
    let stem = file.trim_end_matches(".rs");
    let names_file = map.contains(&format!("`{file}`"))
        || map.contains(&format!("`{stem}`"))
        || map.contains(&format!("{file} "))
        || map.contains(&format!("{file}`"))
        || map.contains(&format!("{file})"))
        || map.contains(&format!("{file},"));
    if dir.is_empty() {
        return names_file;
    }
    // The folder named (`platform/osb/`, or `osb/` inside its crate's
    // paragraph), and the file in it named, or its `mod.rs`.
    let folder = dir
        .rsplit('/')
        .nth(1)
        .map(|d| format!("{d}/"))
        .unwrap_or_default();
    (map.contains(&dir) || map.contains(&format!("`{folder}`")) || map.contains(&folder))
        && (names_file || stem == "mod")
}

#[test]
fn every_source_file_of_the_host_crates_is_in_the_module_map() {
    let root = root();
    let map = read(&root.join("docs/architecture.md"));
    let mut missing = Vec::new();
    for krate in [
        "addonhost",
        "addonhost-sqlite",
        "addonhost-server",
        "addonhost-cli",
    ] {
        let src = root.join("host").join(krate).join("src");
        for rel in files(&src, ".rs") {
            if !named(&map, &rel) {
                missing.push(format!("host/{krate}/src/{rel}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/architecture.md's module map does not name: {}",
        missing.join(", ")
    );
}

#[test]
fn every_test_file_is_in_the_tests_table() {
    let root = root();
    let map = read(&root.join("docs/architecture.md"));
    let tests = map
        .split("## Tests")
        .nth(1)
        .expect("docs/architecture.md has a Tests section");
    let missing: Vec<_> = fs::read_dir(root.join("tests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name.ends_with(".rs"))
        .filter(|name| !tests.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md's Tests table does not name: {}",
        missing.join(", ")
    );
}

#[test]
fn every_test_file_is_a_module_of_the_one_test_binary() {
    // A file left out of main.rs would compile nowhere and run never.
    let root = root();
    let main = read(&root.join("tests/main.rs"));
    let missing: Vec<_> = fs::read_dir(root.join("tests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter_map(|name| name.strip_suffix(".rs").map(str::to_string))
        .filter(|m| m != "main" && !main.contains(&format!("\nmod {m};\n")))
        .collect();
    assert!(
        missing.is_empty(),
        "tests/main.rs does not declare: {}",
        missing.join(", ")
    );
}

/// The paths a document links (`[text](path)`) or cites in code spans
/// (`` `host/addonhost/src/…` ``, `` `platform/actor.rs` ``).
fn cited(doc: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for part in doc.split("](").skip(1) {
        let target = part.split(')').next().unwrap_or("");
        let target = target.split_whitespace().next().unwrap_or("");
        if !(target.is_empty()
            || target.starts_with('#')
            || target.contains("://")
            || target.starts_with("mailto:"))
        {
            out.insert(format!("link:{}", target.split('#').next().unwrap()));
        }
    }
    for (i, span) in doc.split('`').enumerate() {
        // Odd pieces are inside code spans; a path has no spaces and names
        // a file of ours by its extension or a folder of ours.
        if i % 2 == 0 || span.contains(char::is_whitespace) || span.contains('*') {
            continue;
        }
        let ours = [
            "host/",
            "tests/",
            "plugins/",
            "examples/",
            "wit/",
            "docs/",
            ".ci/",
        ];
        let source = [
            ".rs", ".md", ".wit", ".sh", ".py", ".js", ".mjs", ".toml", ".json",
        ];
        // (node_modules is what tests/run.sh installs, not a file of ours.)
        if ours.iter().any(|p| span.starts_with(p))
            && !span.contains('<')
            && !span.contains("node_modules")
        {
            out.insert(format!("repo:{}", span.trim_end_matches('/')));
        } else if span.ends_with(".rs") && span.contains('/') && !span.starts_with('/') {
            out.insert(format!("src:{span}"));
        } else if source.iter().any(|e| span.ends_with(e)) && span.starts_with("../") {
            out.insert(format!("link:{span}"));
        }
    }
    out
}

#[test]
fn every_path_the_readme_and_docs_cite_exists() {
    let root = root();
    let mut docs = vec![root.join("README.md")];
    docs.extend(
        files(&root.join("docs"), ".md")
            .iter()
            .map(|f| root.join("docs").join(f)),
    );
    // A crate-relative source path (`platform/actor.rs`) is found under one
    // of the host crates' src/ (or a plugin's).
    let crate_roots: Vec<PathBuf> = [
        "addonhost",
        "addonhost-sqlite",
        "addonhost-server",
        "addonhost-cli",
    ]
    .iter()
    .map(|k| root.join("host").join(k).join("src"))
    .chain([root.join("host"), root.join("plugins"), root.join("tests")])
    .collect();
    // Only a path whose first folder is one of those crates' own is theirs
    // (`src/lib.rs` in an authoring guide is the author's file).
    let folders: BTreeSet<String> = crate_roots[..4]
        .iter()
        .flat_map(|r| fs::read_dir(r).unwrap())
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    let mut broken = Vec::new();
    for doc in &docs {
        let text = read(doc);
        let here = doc.parent().unwrap();
        for cite in cited(&text) {
            let (kind, path) = cite.split_once(':').unwrap();
            let first = path.split('/').next().unwrap_or("");
            if kind == "src" && !folders.contains(first) {
                continue;
            }
            let exists = match kind {
                "link" => here.join(path).exists() || root.join(path).exists(),
                "repo" => root.join(path).exists(),
                _ => crate_roots.iter().any(|r| r.join(path).exists()),
            };
            if !exists {
                let doc = doc.strip_prefix(&root).unwrap_or(doc);
                broken.push(format!("{}: {path}", doc.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "paths cited that do not exist:\n  {}",
        broken.join("\n  ")
    );
}

/// The crates `krate` depends on when built (normal dependencies, all the
/// way down), as `cargo tree` lists them.
fn dependencies(krate: &str, features: &[&str]) -> BTreeSet<String> {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree", "-p", krate, "-e", "normal", "--prefix", "none", "-f", "{p}",
        ])
        .args(features)
        .current_dir(root())
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {krate}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Architecture invariants (docs/architecture.md, "The crate graph"): the
/// library knows no HTTP server, command line, file watcher or templates;
/// the server knows no command line or file watcher.
#[test]
fn no_crate_imports_what_lies_above_it() {
    let above = [
        (
            "addonhost",
            &["axum", "tower-http", "clap", "notify", "askama"][..],
        ),
        (
            "addonhost-sqlite",
            &["axum", "clap", "wasmtime", "tokio-postgres"][..],
        ),
        ("addonhost-server", &["clap", "notify"][..]),
    ];
    let mut broken = Vec::new();
    for (krate, forbidden) in above {
        let deps = dependencies(krate, &[]);
        for f in forbidden {
            if deps.contains(*f) {
                broken.push(format!("{krate} depends on {f}"));
            }
        }
    }
    // An embedder that wants SQLite only compiles no PostgreSQL driver.
    let sqlite_only = dependencies("addonhost", &["--no-default-features"]);
    for f in [
        "tokio-postgres",
        "tokio-postgres-rustls",
        "postgres-protocol",
    ] {
        if sqlite_only.contains(f) {
            broken.push(format!("addonhost without default features depends on {f}"));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("; "));
}
