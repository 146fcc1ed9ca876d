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

impl CallError {
    /// The call was refused before it started and may simply be retried.
    pub fn is_busy(&self) -> bool {
        matches!(self, CallError::Busy { .. })
    }
}

/// What a host-side limit a trap came from is, if any: a budget a host
/// function refused, a full resource table, or wasmtime's handle or pool
/// limits.
pub(super) fn limit_of(e: &wasmtime::Error) -> Option<Limit> {
    if let Some(b) = e.downcast_ref::<BudgetExceeded>() {
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
    /// wasmtime's instance pool was full (only if the slots undercount).
    Pool,
}

/// A readable reason for a trap: the trap kind, plus the plugin's own last
/// words on stderr (a Rust panic message, a Python traceback).
pub(super) fn explain(trap: Option<&Trap>, e: &wasmtime::Error, stderr: &[u8]) -> String {
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
    let text = String::from_utf8_lossy(stderr);
    let last: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = last[last.len().saturating_sub(3)..].join(" / ");
    if tail.is_empty() {
        what
    } else {
        format!("{what}; stderr: {}", crate::util::truncate(&tail, 600))
    }
}
