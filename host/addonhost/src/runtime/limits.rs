//! What one call may make the host spend, and how the host stops it.
//!
//! A plugin is untrusted code that can ask the host to hold things on its
//! behalf: linear memory, host resources (streams, fields, pollables), log
//! lines, instance slots. Each is bounded here per call or per add-on, and a
//! call that reaches a bound fails alone — never the host, never another
//! add-on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::ResourceLimiter;

/// Host resources (WASI streams, HTTP fields, pollables, component handles)
/// one call may hold at once. The example add-ons use a few dozen; wasmtime's
/// own default is 100,000.
pub const MAX_RESOURCES: usize = 20_000;

/// Bytes of log text one call may write into the host's log; past it one
/// marker line says the rest was dropped.
pub const LOG_BYTES_PER_CALL: usize = 64 << 10;

/// Longest single log line kept.
pub const LOG_LINE_MAX: usize = 4096;

/// Plugin calls running at once in one host, all add-ons together: keeps the
/// instance pool (1,000 component instances) from ever running out, whatever
/// the add-ons' own limits add up to.
pub const MAX_CALLS_IN_FLIGHT: usize = 512;

/// Outbound HTTP requests one call may make (`wasi:http/outgoing-handler`);
/// the next one ends the call. A provisioning that talks to its partner's
/// backend needs a handful.
pub const MAX_OUTBOUND_REQUESTS: usize = 100;

/// Outbound requests one call may have open at once (connecting, waiting
/// or streaming a body); the next waits, within the call's deadline, for
/// one to end. A partner sees at most this many connections per call.
pub const MAX_OUTBOUND_IN_FLIGHT: usize = 8;

/// Response body bytes one call may receive over all its outbound requests;
/// past it the body being read ends in an error. Partner APIs answer small
/// JSON documents; nothing an add-on keeps is larger than this.
pub const MAX_OUTBOUND_RESPONSE_BYTES: u64 = 4 << 20;

/// Longest an outbound request may take to resolve its host and connect
/// (TLS handshake excluded), and never past the call's deadline.
pub const OUTBOUND_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// What a [`BudgetExceeded`] starts with when no budget ran out but the
/// store could not answer a capability (a database gone away): the guest
/// traps at once and the call fails with [`super::CallError::Unavailable`],
/// never with an answer made up for it (an empty read the plugin would take
/// for "no such key").
pub const STORE_UNAVAILABLE: &str = "the store is unavailable";

/// A budget a call ran out of. Host functions return it to trap the guest at
/// once; the call then fails with [`super::CallError::Budget`] (or
/// [`super::CallError::Unavailable`], see [`STORE_UNAVAILABLE`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BudgetExceeded(pub String);

/// Caps the linear memories of one call together (a component may declare
/// several) and remembers whether the cap was hit, so the resulting trap can
/// be reported as what it is.
pub(super) struct MemoryLimiter {
    pub max_bytes: usize,
    /// What the call's memories hold now, together.
    pub total: usize,
    pub hit: bool,
}

impl MemoryLimiter {
    pub fn new(max_bytes: usize) -> Self {
        MemoryLimiter {
            max_bytes,
            total: 0,
            hit: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Called for each memory's creation (from 0) and growth alike.
        let after = self.total - current.min(self.total) + desired;
        if after > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        self.total = after;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// Log text a call has written, and whether the marker was written.
#[derive(Default)]
pub(super) struct LogBudget {
    written: usize,
    truncated: bool,
}

impl LogBudget {
    /// What to log of `message`: all of it (cut to [`LOG_LINE_MAX`]), the
    /// truncation marker once the call's budget is spent, or nothing.
    pub fn admit<'a>(&mut self, message: &'a str) -> Option<std::borrow::Cow<'a, str>> {
        if self.truncated {
            return None;
        }
        let line = crate::util::truncate(message, LOG_LINE_MAX);
        if self.written + line.len() > LOG_BYTES_PER_CALL {
            self.truncated = true;
            return Some(
                format!(
                    "[log truncated: this call wrote more than {} KiB of log; the rest is dropped]",
                    LOG_BYTES_PER_CALL >> 10
                )
                .into(),
            );
        }
        self.written += line.len();
        Some(line.into())
    }
}

/// Instance slots: how many calls of each add-on, and of all add-ons, run at
/// once. A call past either limit is refused at once rather than queued, so a
/// flooded add-on answers "busy" instead of holding memory for a backlog.
pub struct Slots {
    all: Arc<Semaphore>,
    per_addon: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
}

/// The slots a running call holds; freed when dropped.
pub struct Slot {
    _addon: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

/// Which limit refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The add-on's own `limits.concurrency`.
    Addon(usize),
    /// [`MAX_CALLS_IN_FLIGHT`], all add-ons together.
    Host(usize),
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            all: Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT)),
            per_addon: Mutex::new(HashMap::new()),
        }
    }
}

/// One add-on's slots, resolved when a version of it is loaded: a call takes
/// a slot without looking the add-on up.
#[derive(Clone)]
pub struct AddonSlots {
    limit: usize,
    addon: Arc<Semaphore>,
    all: Arc<Semaphore>,
}

impl AddonSlots {
    /// A slot for one more call, or which limit is full.
    pub fn try_acquire(&self) -> Result<Slot, Full> {
        let addon = (self.addon.clone())
            .try_acquire_owned()
            .map_err(|_| Full::Addon(self.limit))?;
        let all = (self.all.clone())
            .try_acquire_owned()
            .map_err(|_| Full::Host(MAX_CALLS_IN_FLIGHT))?;
        Ok(Slot {
            _addon: addon,
            _all: all,
        })
    }
}

impl Slots {
    /// The slots of `addon`, whose limit is `limit` calls at once. A version
    /// loaded with the same limit shares them with the versions before it; a
    /// changed limit (a reload) starts afresh for the calls of the new
    /// version.
    pub fn for_addon(&self, addon: &str, limit: usize) -> AddonSlots {
        let mut map = self.per_addon.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(addon.to_string())
            .or_insert_with(|| (limit, Arc::new(Semaphore::new(limit))));
        if entry.0 != limit {
            *entry = (limit, Arc::new(Semaphore::new(limit)));
        }
        AddonSlots {
            limit,
            addon: entry.1.clone(),
            all: self.all.clone(),
        }
    }

    /// A slot for a call of `addon`, whose limit is `limit` calls at once.
    pub fn try_acquire(&self, addon: &str, limit: usize) -> Result<Slot, Full> {
        self.for_addon(addon, limit).try_acquire()
    }

    /// Calls of `addon` running now.
    pub fn in_flight(&self, addon: &str) -> usize {
        let map = self.per_addon.lock().unwrap_or_else(|p| p.into_inner());
        map.get(addon)
            .map(|(limit, sem)| limit - sem.available_permits())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_of_one_call_count_together() {
        let mib = 1 << 20;
        let mut l = MemoryLimiter::new(64 * mib);
        // Two memories of 40 MiB each: the second passes the call's cap.
        assert!(l.memory_growing(0, 40 * mib, None).unwrap());
        assert!(!l.memory_growing(0, 40 * mib, None).unwrap());
        assert!(l.hit);
        // Growing the first memory within the cap still works.
        let mut l = MemoryLimiter::new(64 * mib);
        assert!(l.memory_growing(0, 10 * mib, None).unwrap());
        assert!(l.memory_growing(0, 10 * mib, None).unwrap());
        assert!(l
            .memory_growing(10 * mib, 60 * mib, None)
            .is_ok_and(|ok| !ok));
        assert!(l.memory_growing(10 * mib, 40 * mib, None).unwrap());
        assert_eq!(l.total, 50 * mib);
    }

    #[test]
    fn log_budget_cuts_lines_then_marks_the_truncation_once() {
        let mut b = LogBudget::default();
        let long = "y".repeat(10_000);
        assert_eq!(b.admit(&long).unwrap().len(), LOG_LINE_MAX);
        let mut kept = LOG_LINE_MAX;
        let mut marker = 0;
        for _ in 0..100 {
            match b.admit(&long) {
                Some(line) if line.starts_with("[log truncated") => marker += 1,
                Some(line) => kept += line.len(),
                None => {}
            }
        }
        assert!(kept <= LOG_BYTES_PER_CALL);
        assert_eq!(marker, 1);
    }

    #[test]
    fn an_add_on_at_its_limit_is_refused_without_affecting_another() {
        let slots = Slots::default();
        let held: Vec<_> = (0..3).map(|_| slots.try_acquire("a", 3).unwrap()).collect();
        assert_eq!(slots.try_acquire("a", 3).err(), Some(Full::Addon(3)));
        assert!(slots.try_acquire("b", 3).is_ok());
        assert_eq!(slots.in_flight("a"), 3);
        drop(held);
        assert!(slots.try_acquire("a", 3).is_ok());
    }
}
