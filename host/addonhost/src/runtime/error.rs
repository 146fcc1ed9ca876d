//! Why a plugin call failed, in words a user can act on: which add-on, which
//! call, and which limit or fault.

use wasmtime::component::ResourceTableError;
use wasmtime::Trap;

use super::limits::{BudgetExceeded, Full, MAX_RESOURCES};

/// Why a plugin call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The call ran past its wall-clock deadline and was interrupted (epoch
    /// interruption).
    #[error(
        "add-on {plugin}: {call} timed out after {timeout_ms} ms (the plugin's limits.timeout_ms)"
    )]
    Timeout {
        /// The add-on id.
        plugin: String,
        /// The export called (`provision`, `rotate`, …).
        call: &'static str,
        /// The deadline it ran past, in milliseconds (the manifest's
        /// `limits.timeout_ms`).
        timeout_ms: u64,
    },
    /// The call tried to grow its memories past the add-on's cap and was
    /// stopped.
    #[error("add-on {plugin}: {call} exceeded its memory limit of {memory_mb} MiB (all of the call's memories together)")]
    MemoryLimit {
        /// The add-on id.
        plugin: String,
        /// The export called.
        call: &'static str,
        /// The cap it hit, in MiB (the manifest's `limits.memory_mb`).
        memory_mb: u64,
    },
    /// The call asked the host to hold or write more than one call may.
    #[error("add-on {plugin}: {call} exceeded its budget: {what}")]
    Budget {
        /// The add-on id.
        plugin: String,
        /// The export called.
        call: &'static str,
        /// Which budget, and how much was asked, in words for the user.
        what: String,
    },
    /// Too many calls are running already; nothing was started.
    #[error("add-on {plugin}: {}; try again shortly", busy_reason(*.full))]
    Busy {
        /// The add-on id.
        plugin: String,
        /// The export that was refused.
        call: &'static str,
        /// Which limit was full: the add-on's `limits.concurrency`, or the
        /// host's slots for all plugins.
        full: Full,
    },
    /// The plugin crashed (a wasm trap: a panic, an abort, a stack overflow, a
    /// bad memory access).
    #[error("add-on {plugin}: {call} crashed: {reason}")]
    Trap {
        /// The add-on id.
        plugin: String,
        /// The export called.
        call: &'static str,
        /// The trap in words, followed by the plugin's last lines on stderr
        /// when it wrote any.
        reason: String,
    },
    /// The store could not answer one of the call's capabilities (its
    /// database is unreachable): the call was stopped there; it may be
    /// retried.
    #[error("add-on {plugin}: {call} stopped: {reason}; try again shortly")]
    Unavailable {
        /// The add-on id.
        plugin: String,
        /// The export called.
        call: &'static str,
        /// What the store said.
        reason: String,
    },
    /// The plugin answered with an error meant for the user.
    #[error("add-on {plugin}: {message}")]
    Addon {
        /// The add-on id.
        plugin: String,
        /// What the plugin said, shown to the user as it is.
        message: String,
    },
}

fn busy_reason(full: Full) -> String {
    match full {
        Full::Addon(n) => {
            format!("busy: it is already running {n} calls at once (its limits.concurrency)")
        }
        Full::Host(n) => format!("busy: the host is already running {n} plugin calls at once"),
    }
}

/// How a plugin call ended, as the metrics' `outcome` label says it (the
/// runtime names it, so the metrics need not know its errors).
pub fn outcome_of<T>(r: &Result<T, CallError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(CallError::Addon { .. }) => "addon_error",
        Err(CallError::Timeout { .. }) => "timeout",
        Err(CallError::MemoryLimit { .. }) => "memory",
        Err(CallError::Trap { .. }) => "trap",
        Err(CallError::Budget { .. } | CallError::Busy { .. }) => "rejected",
        Err(CallError::Unavailable { .. }) => "unavailable",
    }
}

impl CallError {
    /// The call was refused before it started and may simply be retried.
    pub fn is_busy(&self) -> bool {
        matches!(self, CallError::Busy { .. })
    }

    /// The store could not answer the call; it may be retried.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, CallError::Unavailable { .. })
    }
}

/// What a host-side limit a trap came from is, if any: a budget a host
/// function refused, a full resource table, or wasmtime's handle or pool
/// limits.
pub(super) fn limit_of(e: &wasmtime::Error) -> Option<Limit> {
    if let Some(b) = e.downcast_ref::<BudgetExceeded>() {
        if b.0.starts_with(super::limits::STORE_UNAVAILABLE) {
            return Some(Limit::Unavailable(b.0.clone()));
        }
        return Some(Limit::Budget(b.0.clone()));
    }
    let resources = || {
        Limit::Budget(format!(
            "more than {MAX_RESOURCES} host resources (streams, HTTP fields, pollables, handles) held at once"
        ))
    };
    if let Some(ResourceTableError::Full) = e.downcast_ref::<ResourceTableError>() {
        return Some(resources());
    }
    let text = format!("{e:#}");
    if text.contains("store handle limit exceeded") {
        return Some(resources());
    }
    if text.contains("maximum concurrent limit") {
        return Some(Limit::Pool);
    }
    None
}

pub(super) enum Limit {
    Budget(String),
    /// Not a limit: the store could not answer (see `STORE_UNAVAILABLE`).
    Unavailable(String),
    /// wasmtime's instance pool was full (only if the slots undercount).
    Pool,
}

/// A readable reason for a trap: the trap kind, where in the plugin's own
/// code it happened, and the plugin's last words on stderr.
///
/// - A Python exception (the SDK prints its traceback to stderr before
///   componentize-py aborts) is told as the exception and its last frames,
///   file, line and code: the abort itself says nothing to the author.
/// - Any other trap names the trap and, when the component carries names
///   and line tables (a `plugins:dev` build keeps them), the frames of the
///   wasm backtrace: function, file and line. A Rust panic's message names
///   its `src/lib.rs:LINE` too.
pub(super) fn explain(trap: Option<&Trap>, e: &wasmtime::Error, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    if let Some(python) = python_traceback(&text) {
        return python;
    }
    let what = match trap {
        Some(Trap::StackOverflow) => "stack overflow (unbounded recursion?)".to_string(),
        Some(Trap::UnreachableCodeReached) => {
            "wasm trap: unreachable executed (a panic or abort)".to_string()
        }
        Some(Trap::MemoryOutOfBounds) => {
            "wasm trap: out-of-bounds memory access (the plugin's shadow stack overflowed, or a memory bug)".to_string()
        }
        Some(t) => t.to_string(),
        None => format!("{e:#}"),
    };
    let last: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = last[last.len().saturating_sub(3)..].join(" / ");
    let mut out = if tail.is_empty() {
        what
    } else {
        format!("{what}; stderr: {}", crate::util::truncate(&tail, 600))
    };
    if let Some(bt) = e.downcast_ref::<wasmtime::WasmBacktrace>() {
        for frame in author_frames(bt) {
            out.push_str("\n  at ");
            out.push_str(&frame);
        }
    }
    out
}

/// Frames of a wasm backtrace shown to an author, innermost first.
const MAX_FRAMES: usize = 8;

/// The frames of `bt` in the add-on's own code, innermost first: the
/// function, and its file and line where the component has line tables.
/// The panic and trap machinery of the standard library and the generated
/// bindings are left out; so is everything when no frame has a name.
fn author_frames(bt: &wasmtime::WasmBacktrace) -> Vec<String> {
    let mut out = Vec::new();
    for frame in bt.frames() {
        let symbols = frame.symbols();
        let described: Vec<(String, Option<String>)> = if symbols.is_empty() {
            frame
                .func_name()
                .map(|n| vec![(n.to_string(), None)])
                .unwrap_or_default()
        } else {
            symbols
                .iter()
                .map(|s| {
                    let name = s.name().or(frame.func_name()).unwrap_or("?").to_string();
                    let at = s.file().map(|f| match (s.line(), s.column()) {
                        (Some(l), Some(c)) if c > 0 => format!("{}:{l}:{c}", short_path(f)),
                        (Some(l), _) => format!("{}:{l}", short_path(f)),
                        _ => short_path(f).to_string(),
                    });
                    (name, at)
                })
                .collect()
        };
        for (name, at) in described {
            if is_machinery(&name, at.as_deref()) {
                continue;
            }
            out.push(match at {
                Some(at) => format!("{name} ({at})"),
                None => name,
            });
            if out.len() == MAX_FRAMES {
                return out;
            }
        }
    }
    out
}

/// Whether a frame belongs to the toolchain rather than to the add-on: the
/// standard library, panic and allocation machinery, generated bindings.
fn is_machinery(name: &str, at: Option<&str>) -> bool {
    const NAMES: &[&str] = &[
        "core::",
        "std::",
        "alloc::",
        "__rust",
        "rust_panic",
        "rust_begin_unwind",
        "abort",
        "wit_bindgen",
        "<wit_bindgen",
        "_start",
        "__wasm_call",
        "cabi_",
        "__main_void",
        "dlmalloc",
        "<std::",
        "<core::",
        "<alloc::",
    ];
    if NAMES.iter().any(|p| name.starts_with(p)) {
        return true;
    }
    at.is_some_and(|f| {
        f.starts_with("/rustc/")
            || f.contains("/.cargo/registry/")
            || f.contains("/library/std/")
            || f.contains("/library/core/")
    })
}

/// `src/lib.rs` as the author knows it: a long absolute path from the build
/// machine keeps its last few components.
fn short_path(path: &str) -> &str {
    let parts: Vec<(usize, &str)> = path.match_indices('/').collect();
    if !path.starts_with('/') || parts.len() <= 3 {
        return path;
    }
    // From the folder above `src/`, when there is one.
    if let Some(at) = path.rfind("/src/") {
        let before = &path[..at];
        if let Some(start) = before.rfind('/') {
            return &path[start + 1..];
        }
    }
    &path[parts[parts.len() - 3].0 + 1..]
}

/// A Python exception as the addonhost SDK prints it (the standard
/// traceback format): the exception line, then its last frames, innermost
/// first, each as `file:line in function: code`.
fn python_traceback(stderr: &str) -> Option<String> {
    let start = stderr.rfind("Traceback (most recent call last):")?;
    let lines: Vec<&str> = stderr[start..].lines().skip(1).collect();
    let mut frames = Vec::new();
    let mut exception = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(rest) = line.trim_start().strip_prefix("File \"") {
            // File "app.py", line 27, in helper
            let (file, rest) = rest.split_once('"')?;
            let lineno = rest
                .split("line ")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .unwrap_or("?")
                .trim();
            let func = rest.split(", in ").nth(1).unwrap_or("?").trim();
            let file = short_python_path(file);
            let code = lines
                .get(i + 1)
                .filter(|l| l.starts_with("    ") && !l.trim_start().starts_with("File \""))
                .map(|l| l.trim());
            if code.is_some() {
                i += 1;
            }
            if !is_authors_python(file) {
                i += 1;
                continue;
            }
            frames.push(match code {
                Some(code) if !code.chars().all(|c| "^~ ".contains(c)) => {
                    format!("{file}:{lineno} in {func}: {code}")
                }
                _ => format!("{file}:{lineno} in {func}"),
            });
        } else if !line.starts_with(' ') && !line.trim().is_empty() && exception.is_none() {
            exception = Some(line.trim());
        }
        i += 1;
    }
    let exception = exception?;
    let mut out = format!("Python exception {}", crate::util::truncate(exception, 400));
    for frame in frames.iter().rev().take(MAX_FRAMES) {
        out.push_str("\n  at ");
        out.push_str(crate::util::truncate(frame, 300));
    }
    Some(out)
}

/// componentize-py maps the add-on's folder to `/0`, `/1`, …: the author
/// knows `/0/app.py` as `app.py`.
fn short_python_path(file: &str) -> &str {
    let mut parts = file.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(""), Some(n), Some(rest))
            if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            rest
        }
        _ => file,
    }
}

/// Whether a frame is in the author's code, not in the SDK, the build's
/// entry or dev loader, the standard library or the bindings.
fn is_authors_python(file: &str) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file);
    !(["addonhost.py", "addonhost_entry.py", "addonhost_dev.py"].contains(&name)
        || file.starts_with(['<'])
        || file.starts_with("/python")
        || file.starts_with("/world")
        || file.starts_with("/bundled")
        || file.contains("componentize_py"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_traceback_names_the_exception_and_the_authors_lines() {
        let stderr = "noise\nTraceback (most recent call last):\n  File \"/0/addonhost_dev.py\", line 74, in _call\n    return f()\n  File \"/0/app.py\", line 36, in provision\n    x = helper(0)\n        ^^^^^^^^^\n  File \"app.py\", line 27, in helper\n    return 10 / n\n           ~~~^~~\nZeroDivisionError: division by zero\nthread '<unnamed>' panicked at runtime/src/lib.rs:1293:29:\nPython function threw an unexpected exception\n";
        let told = python_traceback(stderr).unwrap();
        assert_eq!(
            told,
            "Python exception ZeroDivisionError: division by zero\n  at app.py:27 in helper: return 10 / n\n  at app.py:36 in provision: x = helper(0)"
        );
        assert!(python_traceback("thread panicked at lib.rs:1:1").is_none());
    }

    #[test]
    fn paths_keep_the_folder_above_src() {
        assert_eq!(
            short_path("/home/a/b/my-addon/src/lib.rs"),
            "my-addon/src/lib.rs"
        );
        assert_eq!(short_path("src/lib.rs"), "src/lib.rs");
        assert!(is_machinery("core::panicking::panic", None));
        assert!(is_machinery("f", Some("/rustc/abc/library/core/src/x.rs")));
        assert!(!is_machinery(
            "hostile::overflow",
            Some("hostile/src/lib.rs:3")
        ));
    }
}
