//! What one plugin call may see and change: the platform's implementation of
//! the runtime's `Capabilities`, and the single place the config-ownership
//! rule is enforced for plugins.
//!
//! A call is a unit: its KV writes and config updates are buffered here
//! (reads see them) and written by the platform in the same transaction as the
//! call's outcome — or dropped if the call traps, times out or fails. So a
//! plugin that dies half-way leaves the store exactly as it was.

mod vars;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::manifest::Manifest;
use crate::runtime::capabilities::Budgeted;
use crate::runtime::{BudgetExceeded, Capabilities, Grant, Level};
use crate::store::{self, ResourceState, Store, Tx};

use super::naming;

/// Largest KV key a plugin may store, in bytes.
pub const MAX_KV_KEY: usize = 1024;
/// Largest KV value, in bytes.
pub const MAX_KV_VALUE: usize = 1 << 20;

/// Bytes one call may write through the host (KV keys and values, config
/// var names and values), all buffered until the call ends.
pub const MAX_CALL_WRITE_BYTES: usize = 8 << 20;
/// KV operations (reads included) one call may make.
pub const MAX_CALL_KV_OPS: usize = 100_000;
/// Longest refusal kept.
const MAX_REFUSAL_BYTES: usize = 500;

/// What a refused write tried, for the audit trail: of each kind, a call's
/// first refusal is kept in full and the rest are counted in one entry, so
/// a call leaves at most two entries per kind whatever it tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A resource the call may not touch (another's, unknown, not yet made).
    Resource,
    /// A resource that is not provisioned.
    State,
    /// A var not in the manifest.
    Var,
    /// A value that is not allowed.
    Value,
    /// A var owned by another add-on or taken over by the user.
    Ownership,
    /// An outbound HTTP request.
    Outbound,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Resource => "resource out of reach",
            Refusal::State => "resource not provisioned",
            Refusal::Var => "var not in the manifest",
            Refusal::Value => "value not allowed",
            Refusal::Ownership => "var not its own",
            Refusal::Outbound => "outbound request",
        }
    }
}

/// Which resources this call may touch.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Provisioning: the resource does not exist yet; its config is the
    /// call's return value.
    Provisioning,
    /// A call about one resource: only its vars (by the add-on's id).
    Resource {
        /// The add-on's id of the resource, as it returned it from
        /// `provision`.
        partner_id: String,
    },
    /// A call the add-on makes on its own behalf (HTTP, schedule): any of
    /// its own resources.
    Service,
}

/// Writes the call asked for, applied when it succeeds.
#[derive(Debug, Default)]
pub struct Effects {
    /// KV writes by key: `Some` stores the value, `None` deletes the key; the
    /// last write of a key wins.
    pub kv: BTreeMap<String, Option<Vec<u8>>>,
    /// Config var changes the add-on made on its own behalf, after the
    /// ownership checks.
    pub updates: Vec<Update>,
    /// Pending provisionings the add-on completed.
    pub completions: Vec<Completion>,
    /// Pending provisionings the add-on failed: (partner id, message for the
    /// user, at most 1000 bytes).
    pub failures: Vec<(String, String)>,
    /// Writes that were refused: logged to the audit trail whatever the
    /// call's outcome.
    pub refusals: Vec<(String, String)>,
    /// What the call read of the KV: its writes apply only if it still
    /// reads the same.
    pub reads: super::reads::ReadSet,
    /// Who the writes are recorded as: `None` is the add-on itself
    /// (`addon:<id>`); the Platform API's writes name its partner.
    pub actor: Option<String>,
}

impl Effects {
    /// Nothing to write (refusals are logged separately).
    pub fn is_empty(&self) -> bool {
        self.kv.is_empty()
            && self.updates.is_empty()
            && self.completions.is_empty()
            && self.failures.is_empty()
    }
}

/// A partner-initiated change of one resource's vars (manifest names).
#[derive(Debug)]
pub struct Update {
    /// The add-on's id of the resource.
    pub partner_id: String,
    /// (manifest var name, new value or `None` to remove it), in the order
    /// asked.
    pub changes: Vec<(String, Option<String>)>,
    /// Why, in the add-on's words (at most 200 bytes); goes to the audit trail.
    pub reason: String,
}

/// A pending provisioning the add-on completed.
#[derive(Debug)]
pub struct Completion {
    /// The add-on's id of the resource, the one it returned as pending.
    pub partner_id: String,
    /// (manifest var name, value) to set, already validated like a provision's
    /// answer.
    pub config: Vec<(String, String)>,
    /// The add-on's message for the user, if any.
    pub message: Option<String>,
}

/// The capabilities of one call of one add-on.
pub struct CallContext {
    store: Arc<Store>,
    manifest: Arc<Manifest>,
    scope: Scope,
    /// Where the call's HTTP requests may go (the runtime enforces it).
    grant: Grant,
    effects: Arc<Mutex<Effects>>,
    spent: Spent,
}

/// What a call has used of its budgets.
#[derive(Default)]
struct Spent {
    written: usize,
    kv_ops: usize,
    /// Refusals of each kind: (how many, where their count entry is in
    /// `Effects::refusals` once there is one).
    refusals: HashMap<Refusal, (usize, Option<usize>)>,
}

impl CallContext {
    /// A context and the handle the platform keeps to read the effects back.
    pub fn new(
        store: Arc<Store>,
        manifest: Arc<Manifest>,
        scope: Scope,
        grant: Grant,
    ) -> (Box<CallContext>, Arc<Mutex<Effects>>) {
        let effects = Arc::new(Mutex::new(Effects::default()));
        let ctx = CallContext {
            store,
            manifest,
            scope,
            grant,
            effects: effects.clone(),
            spent: Spent::default(),
        };
        (Box::new(ctx), effects)
    }

    fn service(&self) -> &str {
        &self.manifest.id
    }

    /// Runs `f` on a snapshot of the store; a store failure is logged and
    /// told to the plugin as an error string (the WIT interface speaks
    /// strings).
    fn read<T>(&self, f: impl FnOnce(&dyn Tx) -> anyhow::Result<T>) -> Result<T, String> {
        self.store.read(f).map_err(|e| {
            tracing::error!(addon = %self.service(), "store unavailable: {e:#}");
            format!("store error: {e:#}")
        })
    }

    /// The trap that ends a call whose read the store could not answer.
    fn unavailable(e: String) -> BudgetExceeded {
        BudgetExceeded(format!(
            "{}: {e}",
            crate::runtime::limits::STORE_UNAVAILABLE
        ))
    }

    /// [`CallContext::read`] for `f` that makes one read statement.
    fn read_one<T>(&self, f: impl FnOnce(&dyn Tx) -> anyhow::Result<T>) -> Result<T, String> {
        self.store.read_one(f).map_err(|e| {
            tracing::error!(addon = %self.service(), "store unavailable: {e:#}");
            format!("store error: {e:#}")
        })
    }

    fn effects(&self) -> std::sync::MutexGuard<'_, Effects> {
        self.effects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The resource `partner_id` names, if this call may touch it.
    fn resource_in_scope(&self, partner_id: &str) -> Result<store::Resource, String> {
        match &self.scope {
            Scope::Provisioning => {
                return Err(
                    "the resource is still being provisioned: return its config from provision"
                        .into(),
                )
            }
            Scope::Resource { partner_id: own } if own != partner_id => {
                return Err(format!(
                    "this call is about resource {own}; resource {partner_id} is out of reach"
                ))
            }
            _ => {}
        }
        match self.read(|tx| tx.resource_by_partner_id(self.service(), partner_id))? {
            Some(r) if r.state != ResourceState::Deprovisioned => Ok(r),
            _ => Err(format!(
                "no resource {partner_id} of add-on {}",
                self.service()
            )),
        }
    }

    /// The resource's own vars, by manifest name, as stored plus this call's
    /// buffered updates.
    fn own_vars(&self, r: &store::Resource) -> BTreeMap<String, String> {
        let prefix = &self.manifest.api.config_vars_prefix;
        let mut vars = self
            .read(|tx| {
                let mut vars = BTreeMap::new();
                // The first attachment (the one made at provisioning) is the
                // canonical view; the others carry the same values.
                if let Some(att) = tx.attachments_of_resource(r.id)?.first() {
                    for var in tx.vars_of_attachment(att.id)? {
                        if let Some(name) = naming::manifest_var(&var.name, prefix, &att.name) {
                            vars.insert(name, var.value);
                        }
                    }
                }
                Ok(vars)
            })
            .unwrap_or_default();
        let pid = r.partner_id.as_deref().unwrap_or_default();
        for u in &self.effects().updates {
            if u.partner_id == pid {
                for (name, value) in &u.changes {
                    match value {
                        Some(v) => vars.insert(name.clone(), v.clone()),
                        None => vars.remove(name),
                    };
                }
            }
        }
        vars
    }

    /// Records a refused write for the audit trail (the call's first of
    /// its kind in full, the others counted in one entry) and answers it to
    /// the plugin.
    fn refuse(&mut self, kind: Refusal, what: String) -> String {
        let service = self.service().to_string();
        let (n, count_at) = {
            let seen = self.spent.refusals.entry(kind).or_insert((0, None));
            seen.0 += 1;
            *seen
        };
        let mut effects = self.effects();
        if n == 1 {
            tracing::warn!(kind = "refusal", addon = %service, "refused: {what}");
            let kept = crate::util::truncate(&what, MAX_REFUSAL_BYTES).to_string();
            effects.refusals.push((service, kept));
            return what;
        }
        let more = format!(
            "…and {} more refusals of this kind ({}) in this call",
            n - 1,
            kind.as_str()
        );
        match count_at.and_then(|i| effects.refusals.get_mut(i)) {
            Some(entry) => entry.1 = more,
            None => {
                effects.refusals.push((service, more));
                let at = effects.refusals.len() - 1;
                drop(effects);
                if let Some(seen) = self.spent.refusals.get_mut(&kind) {
                    seen.1 = Some(at);
                }
            }
        }
        what
    }

    /// Counts one KV operation against the call's budget.
    fn kv_op(&mut self) -> Budgeted<()> {
        self.spent.kv_ops += 1;
        if self.spent.kv_ops > MAX_CALL_KV_OPS {
            return Err(BudgetExceeded(format!(
                "more than {MAX_CALL_KV_OPS} kv operations in one call"
            )));
        }
        Ok(())
    }

    /// Counts `bytes` written through the host against the call's budget.
    fn write(&mut self, bytes: usize) -> Budgeted<()> {
        self.spent.written += bytes;
        if self.spent.written > MAX_CALL_WRITE_BYTES {
            return Err(BudgetExceeded(format!(
                "more than {} MiB written through the host in one call (kv values and keys, config vars)",
                MAX_CALL_WRITE_BYTES >> 20
            )));
        }
        Ok(())
    }
}

impl Capabilities for CallContext {
    fn config_get(&mut self, id: &str, name: &str) -> Budgeted<Option<String>> {
        Ok(match self.resource_in_scope(id) {
            Ok(r) => self.own_vars(&r).remove(name),
            Err(_) => None,
        })
    }

    fn config_list(&mut self, id: &str) -> Budgeted<Vec<(String, String)>> {
        Ok(match self.resource_in_scope(id) {
            Ok(r) => self.own_vars(&r).into_iter().collect(),
            Err(_) => Vec::new(),
        })
    }

    fn config_update(
        &mut self,
        id: &str,
        changes: Vec<(String, Option<String>)>,
        reason: &str,
    ) -> Budgeted<Result<(), String>> {
        let size: usize = changes
            .iter()
            .map(|(n, v)| n.len() + v.as_ref().map_or(0, String::len))
            .sum();
        self.write(size + reason.len().min(200))?;
        Ok(self.update_vars(id, changes, reason))
    }

    fn complete(
        &mut self,
        id: &str,
        config: Vec<(String, String)>,
        message: Option<String>,
    ) -> Budgeted<Result<(), String>> {
        let size: usize = config.iter().map(|(n, v)| n.len() + v.len()).sum();
        self.write(size + message.as_ref().map_or(0, String::len))?;
        Ok(self.complete_pending(id, config, message))
    }

    fn fail(&mut self, id: &str, message: &str) -> Budgeted<Result<(), String>> {
        self.write(message.len().min(1000))?;
        Ok(self.fail_pending(id, message))
    }

    fn kv_get(&mut self, key: &str) -> Budgeted<Option<Vec<u8>>> {
        self.kv_op()?;
        if let Some(v) = self.effects().kv.get(key) {
            return Ok(v.clone());
        }
        let value = self
            .read_one(|tx| tx.kv_get(self.service(), key))
            .map_err(Self::unavailable)?;
        self.effects().reads.key(key, value.as_deref());
        Ok(value)
    }

    fn kv_set(&mut self, key: &str, value: Vec<u8>) -> Budgeted<Result<(), String>> {
        self.kv_op()?;
        if key.is_empty() || key.len() > MAX_KV_KEY {
            return Ok(Err(format!("kv key must be 1 to {MAX_KV_KEY} bytes")));
        }
        if value.len() > MAX_KV_VALUE {
            return Ok(Err(format!(
                "kv value of {} bytes for {key} exceeds the cap of {MAX_KV_VALUE} bytes",
                value.len()
            )));
        }
        self.write(key.len() + value.len())?;
        self.effects().kv.insert(key.to_string(), Some(value));
        Ok(Ok(()))
    }

    fn kv_delete(&mut self, key: &str) -> Budgeted<()> {
        self.kv_op()?;
        self.write(key.len())?;
        self.effects().kv.insert(key.to_string(), None);
        Ok(())
    }

    fn kv_list_keys(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Budgeted<Vec<String>> {
        self.kv_op()?;
        // The store's keys in order, with this call's own writes laid over
        // them: a page may need more of the store than `limit` when the
        // call deleted some of them.
        let buffered: BTreeMap<String, bool> = self
            .effects()
            .kv
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
            .map(|(k, v)| (k.clone(), v.is_some()))
            .collect();
        let mut pages = Vec::new();
        let mut keys = self
            .read(|tx| {
                let mut keys = std::collections::BTreeSet::new();
                let mut cursor = after.map(str::to_string);
                loop {
                    let page = tx.kv_keys(self.service(), prefix, cursor.as_deref(), limit)?;
                    let full = page.len() == limit;
                    pages.push((cursor.clone(), page.clone()));
                    cursor = page.last().cloned();
                    keys.extend(page.into_iter().filter(|k| buffered.get(k) != Some(&false)));
                    if !full || keys.len() >= limit {
                        return Ok(keys);
                    }
                }
            })
            .map_err(Self::unavailable)?;
        {
            let reads = &mut self.effects().reads;
            for (from, page) in &pages {
                reads.keys(prefix, from.as_deref(), limit, page);
            }
        }
        keys.extend(
            buffered
                .iter()
                .filter(|(_, set)| **set)
                .map(|(k, _)| k.clone()),
        );
        Ok(keys.into_iter().take(limit).collect())
    }

    fn kv_count_keys(&mut self, prefix: &str) -> Budgeted<u64> {
        self.kv_op()?;
        let buffered: Vec<(String, bool)> = self
            .effects()
            .kv
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.is_some()))
            .collect();
        let mut seen = Vec::new();
        let count = self.read(|tx| {
            let stored = tx.kv_count(self.service(), prefix)?;
            let mut count = stored as i64;
            // This call's own writes: a new key counts, a deleted one not.
            for (key, set) in &buffered {
                let value = tx.kv_get(self.service(), key)?;
                match (value.is_some(), set) {
                    (false, true) => count += 1,
                    (true, false) => count -= 1,
                    _ => {}
                }
                seen.push((key.clone(), value));
            }
            Ok((stored, count))
        });
        let (stored, count) = count.map_err(Self::unavailable)?;
        let reads = &mut self.effects().reads;
        reads.count(prefix, stored);
        for (key, value) in &seen {
            reads.key(key, value.as_deref());
        }
        Ok(count.max(0) as u64)
    }

    fn log(&mut self, level: Level, message: &str) {
        let addon = self.service();
        // The add-on's id of the resource the call is about, if one.
        let resource = match &self.scope {
            Scope::Resource { partner_id } => partner_id.as_str(),
            _ => "",
        };
        match level {
            Level::Debug => tracing::debug!(kind = "plugin", addon, resource, "{message}"),
            Level::Info => tracing::info!(kind = "plugin", addon, resource, "{message}"),
            Level::Warn => tracing::warn!(kind = "plugin", addon, resource, "{message}"),
            Level::Error => tracing::error!(kind = "plugin", addon, resource, "{message}"),
        }
    }

    fn outbound(&self) -> Grant {
        self.grant.clone()
    }

    fn resource_id(&self) -> Option<&str> {
        match &self.scope {
            Scope::Resource { partner_id } => Some(partner_id),
            _ => None,
        }
    }

    /// A refused outbound request goes to the audit trail like a refused
    /// write (and counts among the call's refusals).
    fn outbound_refused(&mut self, _url: &str, why: &str) {
        self.refuse(Refusal::Outbound, why.to_string());
    }
}
