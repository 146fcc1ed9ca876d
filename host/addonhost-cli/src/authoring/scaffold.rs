//! `plugins:new`: a working add-on to start from, in any of the three
//! languages: a manifest with fresh secrets, the three interfaces implemented
//! minimally but correctly (provision returns one URL var, rotate issues a new
//! key, SSO verify checks both tokens and freshness), a landing page for SSO,
//! and a README for the author. `plugins:check` passes on it as generated.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rand::distr::{Alphanumeric, SampleString};

use super::build::Language;
use super::kit;
use addonhost::manifest::FILE_NAME;

const MANIFEST: &str = include_str!("../../templates/common/addon-manifest.json");
const README: &str = include_str!("../../templates/common/README.md");
const GITIGNORE: &str = include_str!("../../templates/common/gitignore");
const RUST_CARGO: &str = include_str!("../../templates/rust/Cargo.toml");
const RUST_LIB: &str = include_str!("../../templates/rust/src/lib.rs");
const PYTHON_APP: &str = include_str!("../../templates/python/app.py");
const JS_PACKAGE: &str = include_str!("../../templates/js/package.json");
const JS_INDEX: &str = include_str!("../../templates/js/index.js");

/// Whether `name` can be an add-on id: lowercase letters, digits and dashes,
/// starting with a letter, at most 30 characters (the manifest's rule, kept
/// short because resource ids and Cargo package names derive from it).
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 30
        && b[0].is_ascii_lowercase()
        && !name.ends_with('-')
        && !name.contains("--")
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// `my-cache` → `My Cache`.
fn title(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Creates the add-on `name` in `parent/name`; answers the folder.
pub fn new(name: &str, lang: Language, parent: &Path) -> anyhow::Result<PathBuf> {
    if !valid_name(name) {
        bail!(
            "{name:?} is not a valid add-on name: use lowercase letters, digits and single dashes, starting with a letter (at most 30 characters), like `my-cache`"
        );
    }
    let dir = parent.join(name);
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} already exists and is not empty; pick another name or --dir",
            dir.display()
        );
    }
    let kit = kit::ensure()?;
    let prefix = name.to_ascii_uppercase().replace('-', "_");
    let mut rng = rand::rng();
    let password = Alphanumeric.sample_string(&mut rng, 32);
    let salt = Alphanumeric.sample_string(&mut rng, 32);
    let sdk_path = kit.rust_sdk().display().to_string();
    let (language, build_note, notes, gitignore_extra, memory_mb) = match lang {
        Language::Rust => (
            "Rust",
            "cargo build for wasm32-wasip2 (installs the target if missing)",
            "The SDK (`addonhost-sdk`) comes with the addonhost binary: `Cargo.toml` points at it in \
             addonhost's cache. `src/lib.rs` is the whole add-on; the SDK's docs are in its source.",
            "target/",
            64,
        ),
        Language::Python => (
            "Python",
            "componentize-py, installed into addonhost's cache on first use",
            "`app.py` is the whole add-on. `import addonhost` is the SDK (results, SSO check, secrets, \
             the private store, HTTP); `wit_world` holds the generated bindings. Every call runs in a \
             fresh instance: keep state in `addonhost.store`, not in globals. Standard-library modules \
             that need the network, threads or files outside the add-on's folder are not available.",
            "__pycache__/",
            128,
        ),
        Language::Js => (
            "JavaScript",
            "componentize-js, installed into addonhost's cache on first use",
            "`index.js` is the whole add-on. `addonhost.js` is written by every build (the SDK plus \
             this add-on's manifest): do not edit it. Every call runs in a fresh instance: keep state \
             in `store`, not in globals. `fetch` to other hosts is refused by the host.",
            "addonhost.js\nnode_modules/",
            128,
        ),
    };
    let fill = |template: &str| {
        template
            .replace("{{id}}", name)
            .replace("{{title}}", &title(name))
            .replace("{{prefix}}", &prefix)
            .replace("{{password}}", &password)
            .replace("{{salt}}", &salt)
            .replace("{{sdk_path}}", &sdk_path.replace('\\', "/"))
            .replace("{{language}}", language)
            .replace("{{lang}}", lang.name())
            .replace("{{build_note}}", build_note)
            .replace("{{language_notes}}", notes)
            .replace("{{gitignore_extra}}", gitignore_extra)
            .replace("{{memory_mb}}", &memory_mb.to_string())
    };
    let mut files: Vec<(&str, String)> = vec![
        (FILE_NAME, fill(MANIFEST)),
        ("README.md", fill(README)),
        (".gitignore", fill(GITIGNORE)),
    ];
    match lang {
        Language::Rust => {
            files.push(("Cargo.toml", fill(RUST_CARGO)));
            files.push(("src/lib.rs", fill(RUST_LIB)));
            let lock = std::fs::read_to_string(kit.rust_lock())
                .with_context(|| format!("reading {}", kit.rust_lock().display()))?;
            files.push(("Cargo.lock", lock));
        }
        Language::Python => files.push(("app.py", fill(PYTHON_APP))),
        Language::Js => {
            files.push(("package.json", fill(JS_PACKAGE)));
            files.push(("index.js", fill(JS_INDEX)));
        }
    }
    for (rel, contents) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_manifest_id_rule() {
        for good in ["a", "kv", "my-cache", "cache2"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "Kv", "2kv", "my_cache", "my--cache", "cache-", "a b"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(title("my-cache"), "My Cache");
    }

    #[test]
    fn every_template_placeholder_is_filled() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("ADDONHOST_HOME", dir.path().join("home"));
        for (lang, name) in [
            (Language::Rust, "r-one"),
            (Language::Python, "p-one"),
            (Language::Js, "j-one"),
        ] {
            let out = new(name, lang, dir.path()).unwrap();
            for entry in walk(&out) {
                let text = std::fs::read_to_string(&entry).unwrap();
                assert!(
                    !text.contains("{{"),
                    "{} keeps a placeholder",
                    entry.display()
                );
            }
            let m = addonhost::manifest::Manifest::load(&out).unwrap();
            assert_eq!(m.id, name);
            assert_eq!(
                m.api.config_vars,
                vec![format!(
                    "{}_URL",
                    name.to_ascii_uppercase().replace('-', "_")
                )]
            );
            assert_eq!(Language::detect(&out), Some(lang));
            let e = new(name, lang, dir.path()).unwrap_err().to_string();
            assert!(e.contains("already exists"), "{e}");
        }
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
