//! Provider mode, talking back: what a plugin changes on its own behalf (a
//! credential roll from its dashboard, a scheduled rotation, an async
//! completion) is owed to the platform the resource came from. The host
//! makes these calls, never the plugin, and only to the platform its
//! operator configured.
//!
//! Nothing owed is lost: the change is written to the store's outbox in
//! the very transaction that makes it ([`owe`]), so it is there after a
//! crash or a restart exactly when the change itself is. A worker in each
//! server ([`Host::deliver_owed`]) claims what is due — on a shared store
//! one server at a time, under a lease a dead server loses — delivers it,
//! and ends the entry, or tries again later with backoff, or gives up after
//! [`GIVE_UP_SECONDS`] (or at once for an answer no retry changes), audits
//! it and leaves it for an operator to see (`partner:pending`) and retry
//! (`partner:retry`).
//!
//! Bounded, whatever the plugin or the platform does: one entry per
//! resource (a later change is merged into it, the newest value of each
//! var winning, a completion kept), at most [`MAX_IN_FLIGHT`] deliveries of
//! one add-on running in a server (each holding one connection) and
//! [`MAX_DELIVERIES`] in all. A platform that never answers, or a plugin
//! rolling credentials a thousand times, costs a few tasks and sockets and
//! one row per resource; when the platform answers, the newest values are
//! what it gets.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use super::partner::{link_key, token_url, Link};
use super::remote_http::{self, Client};
use super::{actor, Host};
use crate::manifest::Manifest;
use crate::store::{OutboxEntry, Resource, ResourceState, Tx};
use crate::util::unix_now;

/// Deliveries of one add-on running at once in one server (each holds one
/// connection).
pub const MAX_IN_FLIGHT: usize = 4;
/// Deliveries running at once in one server, all add-ons together.
pub const MAX_DELIVERIES: usize = 64;
/// How long a server's claim on an entry holds: longer than one delivery
/// can take (a token, the config and the completion, each within the
/// client's timeout), so a live server never loses one it is delivering.
pub const LEASE_SECONDS: i64 = 5 * remote_http::TIMEOUT.as_secs() as i64;
/// How long an entry is tried before it is given up on (an operator's
/// `partner:retry` tries it again).
pub const GIVE_UP_SECONDS: i64 = 24 * 3600;
/// Longest wait between two attempts.
pub const MAX_BACKOFF_SECONDS: i64 = 600;
/// How often a server looks for due entries when nothing woke it.
const POLL: Duration = Duration::from_secs(1);

/// The wait after `attempts` failed attempts: 1 s, doubling, at most
/// [`MAX_BACKOFF_SECONDS`].
pub fn backoff(attempts: i64) -> i64 {
    let exp = (attempts - 1).clamp(0, 20) as u32;
    (1i64 << exp).min(MAX_BACKOFF_SECONDS)
}

/// What one resource's platform has yet to hear: its vars' changes (the
/// newest value of each, by manifest name) and whether its provisioning
/// completed.
#[derive(Debug, Clone, Default, PartialEq)]
struct Pending {
    changes: Vec<(String, Option<String>)>,
    provisioned: bool,
}

impl Pending {
    /// `newer` on top of this: its values win, the completion stays.
    fn merge(&mut self, newer: Pending) {
        for (name, value) in newer.changes {
            self.changes.retain(|(n, _)| *n != name);
            self.changes.push((name, value));
        }
        self.provisioned |= newer.provisioned;
    }

    fn of(e: &OutboxEntry) -> Pending {
        Pending {
            changes: serde_json::from_str(&e.changes).unwrap_or_default(),
            provisioned: e.provisioned,
        }
    }
}

/// Records, in the caller's transaction, that the platform resource `r`
/// came from is owed `changes` (by manifest name; `None` removes a var)
/// and, with `provisioned`, the completion of its provisioning: merged into
/// what is owed already. Nothing for a resource of this host's own apps.
/// Whether anything is owed (the caller wakes the deliveries once its
/// transaction committed).
pub(super) fn owe(
    tx: &dyn Tx,
    m: &Manifest,
    r: &Resource,
    changes: &[(String, Option<String>)],
    provisioned: bool,
) -> anyhow::Result<bool> {
    // A resource a platform provisioned lives on its own partner app; any
    // other has no platform to tell (and costs no read).
    if !r.app.starts_with("partner-") || (changes.is_empty() && !provisioned) {
        return Ok(false);
    }
    let linked = tx
        .setting(&link_key(&r.uuid))?
        .and_then(|l| serde_json::from_str::<Link>(&l).ok())
        .is_some_and(|l| l.service == m.id && r.service == m.id);
    if !linked {
        return Ok(false);
    }
    let now = unix_now();
    let mut e = tx.outbox_entry(&r.uuid)?.unwrap_or_else(|| OutboxEntry {
        uuid: r.uuid.clone(),
        service: m.id.clone(),
        changes: "[]".into(),
        provisioned: false,
        version: 0,
        attempts: 0,
        due_at: now,
        claimed_by: None,
        claimed_until: None,
        failed_at: None,
        last_error: None,
        created_at: now,
    });
    let mut pending = Pending::of(&e);
    pending.merge(Pending {
        changes: changes.to_vec(),
        provisioned,
    });
    if e.failed_at.take().is_some() {
        // Given up on before: tried afresh with the newest values.
        e.created_at = now;
    }
    e.changes = serde_json::to_string(&pending.changes)?;
    e.provisioned = pending.provisioned;
    e.version += 1;
    e.attempts = 0;
    e.due_at = now;
    tx.put_outbox_entry(&e)?;
    Ok(true)
}

/// The deliveries of one host: how many run per add-on, and the bell rung
/// when something new is owed.
#[derive(Default)]
pub(super) struct Deliveries {
    running: Mutex<HashMap<String, usize>>,
    wake: tokio::sync::Notify,
}

/// One running delivery, counted until it ends (a panic included).
struct Running {
    host: Arc<Host>,
    service: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let d = &self.host.deliveries;
        let mut running = d.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(&self.service) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.service);
            }
        }
        drop(running);
        // A slot is free: whatever waited for it may go.
        d.wake.notify_one();
    }
}

/// An owed change as `partner:pending` shows it: var names, never values.
#[derive(Debug, Clone, Serialize)]
pub struct OwedView {
    /// The resource's platform uuid.
    pub uuid: String,
    /// The add-on.
    pub addon: String,
    /// The resource's name here, if it still exists.
    pub resource: Option<String>,
    /// `pending` (waiting for its next attempt), `delivering` (a server
    /// holds it) or `failed` (given up on: `partner:retry` tries again).
    pub state: &'static str,
    /// The vars whose newest values are owed.
    pub vars: Vec<String>,
    /// Whether the completion of an asynchronous provisioning is owed.
    pub completion: bool,
    /// Attempts failed since the last change.
    pub attempts: i64,
    /// When the next attempt may start (Unix seconds).
    pub due_at: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the oldest change of it was made.
    pub since: i64,
}

impl Host {
    /// Wakes this process's deliveries (something was just owed).
    pub(super) fn wake_deliveries(&self) {
        self.deliveries.wake.notify_one();
    }

    /// Provider mode's delivery worker: delivers what is owed to calling
    /// platforms as it comes due, for as long as the future runs (`serve`
    /// spawns it). Every server of a shared store runs one; each entry is
    /// delivered by one at a time.
    pub async fn deliver_owed(self: Arc<Self>) {
        loop {
            self.deliver_due().await;
            let _ = tokio::time::timeout(POLL, self.deliveries.wake.notified()).await;
        }
    }

    /// Claims and starts every due delivery there is room for.
    async fn deliver_due(self: &Arc<Self>) {
        let mut looked = false;
        loop {
            let (skip, total) = {
                let running = self
                    .deliveries
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let skip: Vec<String> = running
                    .iter()
                    .filter(|(_, n)| **n >= MAX_IN_FLIGHT)
                    .map(|(s, _)| s.clone())
                    .collect();
                (skip, running.values().sum::<usize>())
            };
            if total >= MAX_DELIVERIES {
                return;
            }
            let now = unix_now();
            if !looked {
                // A read first: an empty outbox costs no write.
                looked = true;
                let due = self.store.read(|tx| tx.outbox_entries()).map(|all| {
                    all.iter().any(|e| {
                        e.failed_at.is_none()
                            && e.due_at <= now
                            && e.claimed_until.is_none_or(|u| u <= now)
                            && !skip.contains(&e.service)
                    })
                });
                match due {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!("cannot read what is owed to platforms: {e:#}");
                        return;
                    }
                }
            }
            let owner = self.server_id.clone();
            let claimed = self
                .store
                .write(move |tx| tx.claim_outbox_entry(&owner, now, now + LEASE_SECONDS, &skip))
                .await;
            let entry = match claimed {
                Ok(Some(e)) => e,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!("cannot claim a change owed to a platform: {e:#}");
                    return;
                }
            };
            *self
                .deliveries
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(entry.service.clone())
                .or_default() += 1;
            let running = Running {
                host: self.clone(),
                service: entry.service.clone(),
            };
            tokio::spawn(async move {
                let host = running.host.clone();
                host.deliver(entry).await;
                drop(running);
            });
        }
    }

    /// One attempt at the entry this server claimed, and its outcome
    /// written.
    async fn deliver(&self, e: OutboxEntry) {
        let outcome = self.attempt(&e).await;
        let (uuid, owner, version, delivered_completion) = (
            e.uuid.clone(),
            self.server_id.clone(),
            e.version,
            e.provisioned,
        );
        let label = |outcome: &'static str| {
            // Only ids of the catalog become label values.
            if self.catalog().get(&e.service).is_some() {
                self.metrics()
                    .partner_deliveries
                    .get_or_create(&crate::metrics::AddonOutcome {
                        addon: e.service.clone(),
                        outcome,
                    })
                    .inc();
            }
        };
        let platform = self.partner_platform();
        let written = match outcome {
            Attempt::Delivered => {
                tracing::info!(addon = %e.service, uuid = %e.uuid, "change delivered to {platform}");
                label("delivered");
                self.store
                    .write(move |tx| {
                        match tx.outbox_entry(&uuid)? {
                            // Nothing changed meanwhile: all of it arrived.
                            Some(cur) if cur.version == version => tx.delete_outbox_entry(&uuid),
                            // A newer change came in meanwhile: it goes next
                            // (its values are the newest; the completion
                            // arrived already).
                            Some(mut cur) => {
                                if delivered_completion {
                                    cur.provisioned = false;
                                }
                                cur.due_at = unix_now();
                                tx.put_outbox_entry(&cur)?;
                                tx.release_outbox_entry(&uuid, &owner)
                            }
                            None => Ok(()),
                        }
                    })
                    .await
            }
            Attempt::Moot(why) => {
                tracing::info!(addon = %e.service, uuid = %e.uuid, "nothing to deliver: {why}");
                self.store
                    .write(move |tx| tx.delete_outbox_entry(&uuid))
                    .await
            }
            Attempt::Failed { why, retry } => {
                tracing::warn!(addon = %e.service, uuid = %e.uuid, "delivery to {platform} failed: {why}");
                let service = e.service.clone();
                let gave_up = self
                    .store
                    .write(move |tx| {
                        // The resource (its app) before its entry: the
                        // order every transaction that owes takes them in.
                        let r = tx.resource_by_uuid(&uuid)?;
                        let Some(mut cur) = tx.outbox_entry(&uuid)? else {
                            return Ok(false);
                        };
                        let now = unix_now();
                        cur.attempts += 1;
                        cur.last_error = Some(crate::util::truncate(&why, 1000).to_string());
                        let give_up = !retry || now - cur.created_at >= GIVE_UP_SECONDS;
                        if give_up {
                            cur.failed_at = Some(now);
                        } else {
                            cur.due_at = now + backoff(cur.attempts);
                        }
                        tx.put_outbox_entry(&cur)?;
                        tx.release_outbox_entry(&uuid, &owner)?;
                        if give_up {
                            let what = format!(
                                "not delivered to the platform {platform}: {why}; \
                                 `addonhost partner:pending` shows it, `addonhost partner:retry {uuid}` tries again"
                            );
                            tx.audit(
                                &actor::addon(&service),
                                "partner:forward",
                                r.as_ref().map(|r| r.app.as_str()),
                                r.as_ref().map(|r| r.name.as_str()),
                                &what,
                            )?;
                        }
                        Ok(give_up)
                    })
                    .await;
                label(match gave_up {
                    Ok(true) => "failed",
                    _ => "retry",
                });
                gave_up.map(|_| ())
            }
        };
        if let Err(err) = written {
            // The claim ends with its lease; the entry is tried again then.
            tracing::error!(addon = %e.service, uuid = %e.uuid, "cannot record the delivery: {err:#}");
        }
    }

    /// Sends the entry to the platform its resource came from.
    async fn attempt(&self, e: &OutboxEntry) -> Attempt {
        let found = self.store.read(|tx| {
            let Some(r) = tx.resource_by_uuid(&e.uuid)? else {
                return Ok(None);
            };
            Ok(tx.setting(&link_key(&r.uuid))?.map(|l| (r, l)))
        });
        let (r, link) = match found {
            Ok(Some((r, l))) if r.state != ResourceState::Deprovisioned => {
                match serde_json::from_str::<Link>(&l) {
                    Ok(link) => (r, link),
                    Err(err) => {
                        return Attempt::Failed {
                            why: format!("the platform link of {} is unreadable: {err}", r.uuid),
                            retry: false,
                        }
                    }
                }
            }
            Ok(_) => return Attempt::Moot("the resource is gone".into()),
            Err(err) => {
                return Attempt::Failed {
                    why: format!("cannot read the resource: {err:#}"),
                    retry: true,
                }
            }
        };
        let service = &e.service;
        if link.service != *service || r.service != *service {
            // A link is where one add-on's changes go: another add-on's
            // (planted before ownership was checked) never gets them.
            return Attempt::Failed {
                why: format!(
                    "the platform link of {} belongs to add-on {}, not {service}",
                    r.uuid, link.service
                ),
                retry: false,
            };
        }
        let platform = self.partner_platform();
        if link.platform.trim_end_matches('/') != platform {
            // Kept by an earlier version from the request's callback_url, or
            // before the operator changed --platform-api: never called.
            return Attempt::Failed {
                why: format!(
                    "the resource came from {}, not from the platform this host is configured for ({platform})",
                    link.platform
                ),
                retry: false,
            };
        }
        let Some(m) = self.catalog().get(service).map(|s| s.manifest.clone()) else {
            return Attempt::Failed {
                why: format!("add-on {service} is not in this server's catalog"),
                retry: true,
            };
        };
        let sender = Sender {
            host: self,
            client: &self.remote_http,
            manifest: &m,
        };
        match sender.send(&r, link, &Pending::of(e)).await {
            Ok(()) => Attempt::Delivered,
            Err((why, retry)) => Attempt::Failed { why, retry },
        }
    }

    /// What is owed to calling platforms, pending and failed, oldest first.
    pub fn owed(&self) -> crate::Result<Vec<OwedView>> {
        let now = unix_now();
        self.store
            .read(|tx| {
                let mut out = Vec::new();
                for e in tx.outbox_entries()? {
                    let resource = tx.resource_by_uuid(&e.uuid)?.map(|r| r.name);
                    let p = Pending::of(&e);
                    out.push(OwedView {
                        state: match (&e.failed_at, e.claimed_until) {
                            (Some(_), _) => "failed",
                            (None, Some(until)) if until > now => "delivering",
                            _ => "pending",
                        },
                        uuid: e.uuid,
                        addon: e.service,
                        resource,
                        vars: p.changes.into_iter().map(|(n, _)| n).collect(),
                        completion: p.provisioned,
                        attempts: e.attempts,
                        due_at: e.due_at,
                        last_error: e.last_error,
                        since: e.created_at,
                    });
                }
                out.sort_by_key(|o| (o.since, o.uuid.clone()));
                Ok(out)
            })
            .map_err(Into::into)
    }

    /// Makes the owed changes given up on (those of `uuids`, or all) due
    /// now, their attempts counted afresh; how many. A running server
    /// delivers them within a second.
    pub async fn retry_owed(&self, uuids: &[String]) -> crate::Result<usize> {
        let uuids = uuids.to_vec();
        let n = self
            .store
            .write(move |tx| {
                let now = unix_now();
                let mut n = 0;
                let wanted: Vec<String> = match uuids.is_empty() {
                    true => tx.outbox_entries()?.into_iter().map(|e| e.uuid).collect(),
                    false => uuids.clone(),
                };
                for uuid in &wanted {
                    let Some(mut e) = tx.outbox_entry(uuid)? else {
                        if !uuids.is_empty() {
                            return Err(super::error::not_found(format!(
                                "nothing is owed to a platform for {uuid}; `addonhost partner:pending` lists what is"
                            )));
                        }
                        continue;
                    };
                    if e.failed_at.take().is_none() {
                        continue;
                    }
                    e.attempts = 0;
                    e.due_at = now;
                    e.created_at = now;
                    tx.put_outbox_entry(&e)?;
                    n += 1;
                }
                Ok(n)
            })
            .await?;
        self.wake_deliveries();
        Ok(n)
    }

    /// Owed changes per add-on (pending, failed), for the metrics.
    pub(super) fn owed_counts(&self) -> anyhow::Result<BTreeMap<String, (i64, i64)>> {
        let mut counts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for e in self.store.read(|tx| tx.outbox_entries())? {
            let c = counts.entry(e.service).or_default();
            match e.failed_at {
                Some(_) => c.1 += 1,
                None => c.0 += 1,
            }
        }
        Ok(counts)
    }
}

/// How one attempt went.
enum Attempt {
    Delivered,
    /// Nothing to deliver any more (the resource went away).
    Moot(String),
    /// Not delivered; `retry` says whether trying again may help.
    Failed {
        why: String,
        retry: bool,
    },
}

/// Sends changes to the calling platform.
struct Sender<'a> {
    host: &'a Host,
    client: &'a Client,
    manifest: &'a Manifest,
}

impl Sender<'_> {
    /// The config, then (for a completion) `actions/provision`; the error
    /// says whether trying again may help.
    async fn send(&self, r: &Resource, link: Link, p: &Pending) -> Result<(), (String, bool)> {
        let token = self.token(&r.uuid, link.clone()).await?;
        let base = link.platform.trim_end_matches('/');
        let headers = [
            ("authorization", format!("Bearer {token}")),
            (
                "accept",
                "application/vnd.heroku+json; version=3".to_string(),
            ),
        ];
        if !p.changes.is_empty() || p.provisioned {
            let config: Vec<Value> = p
                .changes
                .iter()
                .map(|(n, v)| json!({"name": n, "value": v}))
                .collect();
            let url = format!("{base}/addons/{}/config", r.uuid);
            let body = json!({ "config": config }).to_string().into_bytes();
            let reply = self
                .client
                .send(
                    http::Method::PATCH,
                    &url,
                    &headers,
                    Some(("application/json", body)),
                )
                .await
                .map_err(failure)?;
            check(&url, &reply)?;
        }
        if p.provisioned {
            let url = format!("{base}/addons/{}/actions/provision", r.uuid);
            let reply = self
                .client
                .send(
                    http::Method::POST,
                    &url,
                    &headers,
                    Some(("application/json", b"{}".to_vec())),
                )
                .await
                .map_err(failure)?;
            check(&url, &reply)?;
        }
        Ok(())
    }

    /// An access token for resource `uuid`: the one kept while it is good,
    /// else one traded for the refresh token or, first, the grant.
    async fn token(&self, uuid: &str, mut link: Link) -> Result<String, (String, bool)> {
        let now = unix_now();
        if let (Some(t), Some(exp)) = (&link.access_token, link.access_expires_at) {
            if exp > now + 60 {
                return Ok(t.clone());
            }
        }
        let secret = self.manifest.api.client_secret.clone();
        let form: Vec<(&str, String)> = match (&link.refresh_token, &link.grant) {
            (Some(refresh), _) => vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", refresh.clone()),
                ("client_secret", secret),
            ],
            (None, Some(grant)) => vec![
                ("grant_type", "authorization_code".into()),
                ("code", grant.code.clone()),
                ("client_secret", secret),
            ],
            (None, None) => return Err((
                "the provision request carried no oauth_grant: the platform cannot be called back"
                    .into(),
                false,
            )),
        };
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish()
            .into_bytes();
        let url = token_url(&link.platform);
        let reply = self
            .client
            .send(
                http::Method::POST,
                &url,
                &[],
                Some(("application/x-www-form-urlencoded", body)),
            )
            .await
            .map_err(failure)?;
        check(&url, &reply)?;
        let answer: BTreeMap<String, Value> = serde_json::from_slice(&reply.body)
            .map_err(|e| (format!("{url} answered malformed JSON: {e}"), false))?;
        let access = answer
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| (format!("{url} answered no access_token"), false))?
            .to_string();
        link.access_token = Some(access.clone());
        link.access_expires_at = Some(
            now + answer
                .get("expires_in")
                .and_then(Value::as_i64)
                .unwrap_or(3600),
        );
        if let Some(refresh) = answer.get("refresh_token").and_then(Value::as_str) {
            link.refresh_token = Some(refresh.to_string());
        }
        let (key, json) = (
            link_key(uuid),
            serde_json::to_string(&link).unwrap_or_default(),
        );
        // Kept at once: a grant is traded once, and a refresh token rotates.
        if let Err(e) = self
            .host
            .store
            .write(move |tx| tx.put_setting(&key, Some(&json)))
            .await
        {
            tracing::warn!("cannot keep the platform token of {uuid}: {e:#}");
        }
        Ok(access)
    }
}

/// A call that got no answer: worth trying again, but for a request this
/// host refuses to make (a URL it may not call) or a certificate refused
/// (another name, an untrusted issuer: the operator must act).
fn failure(f: remote_http::Failure) -> (String, bool) {
    let retry = !matches!(
        f,
        remote_http::Failure::Bad { .. } | remote_http::Failure::Tls { .. }
    );
    (f.to_string(), retry)
}

/// A 2xx, or the error (worth retrying for a 5xx or 429).
fn check(url: &str, reply: &remote_http::Answer) -> Result<(), (String, bool)> {
    match reply.status {
        200..=299 => Ok(()),
        s => Err((
            format!("{url} answered {s}: {}", reply.snippet()),
            s >= 500 || s == 429,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(changes: &[(&str, Option<&str>)]) -> Pending {
        Pending {
            changes: changes
                .iter()
                .map(|(n, v)| (n.to_string(), v.map(str::to_string)))
                .collect(),
            provisioned: false,
        }
    }

    #[test]
    fn a_pending_change_keeps_the_newest_value_of_each_var() {
        let mut p = config(&[("A", Some("1")), ("B", Some("1"))]);
        p.merge(config(&[("A", Some("2"))]));
        p.merge(config(&[("B", None), ("A", Some("3"))]));
        assert_eq!(
            p.changes,
            vec![("B".to_string(), None), ("A".to_string(), Some("3".into()))]
        );
        assert!(!p.provisioned);
        p.merge(Pending {
            changes: vec![("A".into(), Some("4".into()))],
            provisioned: true,
        });
        p.merge(config(&[("A", Some("5"))]));
        assert!(
            p.provisioned,
            "a completion is never lost to a later change"
        );
        assert_eq!(p.changes.last(), Some(&("A".to_string(), Some("5".into()))));
    }

    #[test]
    fn retries_back_off_to_a_ceiling() {
        assert_eq!(backoff(1), 1);
        assert_eq!(backoff(2), 2);
        assert_eq!(backoff(5), 16);
        assert_eq!(backoff(30), MAX_BACKOFF_SECONDS);
        assert!(LEASE_SECONDS > 3 * remote_http::TIMEOUT.as_secs() as i64);
    }
}
