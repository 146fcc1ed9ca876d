//! Development builds (`addonhost plugins:dev`): a component whose last
//! section is the custom section [`SECTION`], written by `plugins:dev`.
//!
//! For Python and JavaScript the section carries the add-on's source files,
//! and the code before it is one prebuilt loader per language and world that
//! asks the host for them at instantiation (the `dev` interface of
//! `wit/addon.wit`). An edit changes only the section: the code, and so the
//! compiled artifact (cached by the code's hash), stays the same, and a new
//! version serves without compiling anything. For Rust the section only
//! marks the build (a dev profile: quick to build, with line tables for
//! backtraces).
//!
//! A dev build runs in the same sandbox as any component; the sources it is
//! handed are its own. It is marked as such wherever plugins are listed.

use std::sync::Arc;

use anyhow::{bail, Context};
use wasmtime::component::Linker;

use super::CallState;

/// The custom section's name.
pub const SECTION: &str = "addonhost-dev";
/// The most source bytes a dev build may carry.
pub const MAX_SOURCE_BYTES: usize = 8 << 20;
/// The most source files a dev build may carry.
pub const MAX_FILES: usize = 1000;

/// What a development build carries.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DevBuild {
    /// `rust`, `python` or `js`.
    pub language: String,
    /// The add-on's files: (path relative to its folder, text).
    #[serde(default)]
    pub files: Vec<(String, String)>,
}

impl DevBuild {
    /// `code` with this build's section appended: the component
    /// `plugins:dev` writes.
    pub fn append_to(&self, code: &[u8]) -> anyhow::Result<Vec<u8>> {
        let payload = serde_json::to_vec(self)?;
        let mut body = Vec::with_capacity(payload.len() + SECTION.len() + 8);
        leb128(&mut body, SECTION.len() as u64);
        body.extend_from_slice(SECTION.as_bytes());
        body.extend_from_slice(&payload);
        let mut out = Vec::with_capacity(code.len() + body.len() + 10);
        out.extend_from_slice(code);
        out.push(0); // a custom section
        leb128(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
        Ok(out)
    }
}

fn leb128(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_leb128(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// Splits a component into its code and its dev build, when its last
/// top-level section is [`SECTION`]. `Ok(None)` for any other component
/// (also one this walk cannot read: wasmtime judges those).
pub fn split(bytes: &[u8]) -> anyhow::Result<Option<(&[u8], DevBuild)>> {
    if bytes.len() < 8 {
        return Ok(None);
    }
    let mut at = 8;
    let mut last = None;
    while at < bytes.len() {
        let start = at;
        let id = bytes[at];
        at += 1;
        let Some(size) = read_leb128(bytes, &mut at) else {
            return Ok(None);
        };
        let Some(end) = at.checked_add(size as usize).filter(|e| *e <= bytes.len()) else {
            return Ok(None);
        };
        last = Some((start, id, at, end));
        at = end;
    }
    let Some((start, 0, body, end)) = last else {
        return Ok(None);
    };
    let mut name_at = body;
    let Some(name_len) = read_leb128(bytes, &mut name_at) else {
        return Ok(None);
    };
    let name_end = name_at.saturating_add(name_len as usize);
    if bytes.get(name_at..name_end) != Some(SECTION.as_bytes()) {
        return Ok(None);
    }
    let payload = &bytes[name_end..end];
    if payload.len() > MAX_SOURCE_BYTES + (64 << 10) {
        bail!(
            "its development build carries {} bytes of sources (at most {MAX_SOURCE_BYTES})",
            payload.len()
        );
    }
    let build: DevBuild = serde_json::from_slice(payload)
        .context("its development build's sources are unreadable: run plugins:dev again")?;
    if build.files.len() > MAX_FILES {
        bail!(
            "its development build carries {} files (at most {MAX_FILES})",
            build.files.len()
        );
    }
    Ok(Some((&bytes[..start], build)))
}

/// Links `addonhost:addon/dev`: a call's component gets its own sources
/// (none, for a component that is not a dev build).
pub(super) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    let mut dev = linker.instance("addonhost:addon/dev@0.1.0")?;
    dev.func_wrap(
        "sources",
        |store: wasmtime::StoreContextMut<'_, CallState>, (): ()| {
            let files = store
                .data()
                .dev
                .as_deref()
                .map(|b| b.files.clone())
                .unwrap_or_default();
            Ok((files,))
        },
    )?;
    Ok(())
}

/// The sources a plugin's calls are handed.
pub(super) type Sources = Option<Arc<DevBuild>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_build_splits_back_into_its_code_and_sources() {
        let code = wat::parse_str("(component)").unwrap();
        let build = DevBuild {
            language: "python".into(),
            files: vec![("app.py".into(), "x = 1\n".into())],
        };
        let component = build.append_to(&code).unwrap();
        let (back, sources) = split(&component).unwrap().unwrap();
        assert_eq!(back, &code[..]);
        assert_eq!(sources.files, build.files);
        assert!(split(&code).unwrap().is_none());
        wasmtime::component::Component::new(&wasmtime::Engine::default(), &component)
            .expect("the section keeps the component valid");
    }
}
