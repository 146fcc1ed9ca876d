//! Provider mode, talking back: what a plugin changes on its own behalf (a
//! credential roll from its dashboard, a scheduled rotation, an async
//! completion) is sent to the platform the resource came from. The host
//! makes these calls, never the plugin, and only to the platform its
//! operator configured.
//!
//! Bounded, whatever the plugin or the platform does: each add-on has one
//! queue holding at most one pending change per resource (a later change is
//! merged into it, the newest value of each var winning) and at most
//! [`MAX_IN_FLIGHT`] deliveries running, each retried a few times. A
//! platform that never answers, or thousands of changes, cost a fixed
//! number of tasks and sockets; the newest value is what arrives.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};

use super::context::Effects;
use super::partner::{link_key, token_url, Link};
use super::remote_http::{self, Client};
use super::Host;
use crate::manifest::Manifest;
use crate::store::{Resource, Store};
use crate::util::unix_now;

/// Attempts at delivering one change to the calling platform.
const DELIVERY_ATTEMPTS: u32 = 5;
/// Deliveries of one add-on running at once (each holds one connection).
pub const MAX_IN_FLIGHT: usize = 4;

/// One change to send back to a calling platform.
#[derive(Debug, Clone)]
pub(super) enum ToPlatform {
    /// `PATCH /addons/:uuid/config`.
    Config {
        partner_id: String,
        changes: Vec<(String, Option<String>)>,
    },
    /// The config, then `POST /addons/:uuid/actions/provision`.
    Provisioned {
        partner_id: String,
        config: Vec<(String, String)>,
    },
}

/// What of `effects` a calling platform must hear of.
pub(super) fn to_platform_of(effects: &Effects) -> Vec<ToPlatform> {
    let mut out: Vec<ToPlatform> = effects
        .updates
        .iter()
        .map(|u| ToPlatform::Config {
            partner_id: u.partner_id.clone(),
            changes: u.changes.clone(),
        })
        .collect();
    out.extend(effects.completions.iter().map(|c| ToPlatform::Provisioned {
        partner_id: c.partner_id.clone(),
        config: c.config.clone(),
    }));
    out
}

/// What one resource's platform has yet to hear: its vars' changes (the
/// newest value of each) and whether its provisioning completed.
#[derive(Debug, Clone, Default, PartialEq)]
struct Pending {
    changes: Vec<(String, Option<String>)>,
    provisioned: bool,
}

impl Pending {
    fn of(o: ToPlatform) -> (String, Pending) {
        match o {
            ToPlatform::Config {
                partner_id,
                changes,
            } => (
                partner_id,
                Pending {
                    changes,
                    provisioned: false,
                },
            ),
            ToPlatform::Provisioned { partner_id, config } => (
                partner_id,
                Pending {
                    changes: config.into_iter().map(|(n, v)| (n, Some(v))).collect(),
                    provisioned: true,
                },
            ),
        }
    }

    /// `newer` on top of this: its values win, the completion stays.
    fn merge(&mut self, newer: Pending) {
        for (name, value) in newer.changes {
            self.changes.retain(|(n, _)| *n != name);
            self.changes.push((name, value));
        }
        self.provisioned |= newer.provisioned;
    }
}

/// The delivery queues of one host, one per add-on.
#[derive(Default)]
pub(super) struct Deliveries {
    queues: Mutex<HashMap<String, Arc<Queue>>>,
}

/// One add-on's changes on their way to its platform.
struct Queue {
    state: Mutex<QueueState>,
}

struct QueueState {
    /// Resources (partner ids) with a pending change, oldest first.
    order: VecDeque<String>,
    pending: HashMap<String, Pending>,
    /// Resources being delivered now: one delivery per resource at a time,
    /// so changes arrive in order.
    busy: HashSet<String>,
    /// Worker tasks running (at most [`MAX_IN_FLIGHT`]).
    workers: usize,
    /// How to deliver (the add-on's manifest as last loaded).
    forwarder: Arc<Forwarder>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A newer change of `pid` that arrived while it was being delivered.
    fn take_newer(&self, pid: &str) -> Option<Pending> {
        let mut st = self.lock();
        let newer = st.pending.remove(pid)?;
        st.order.retain(|p| p != pid);
        Some(newer)
    }
}

impl QueueState {
    /// Whether a pending change waits that no running delivery holds.
    fn has_work(&self) -> bool {
        self.order.iter().any(|p| !self.busy.contains(p))
    }
}

/// A worker's place in its queue: given back when the worker stops, even by
/// a panic.
struct Slot {
    queue: Arc<Queue>,
    busy: Option<String>,
    counted: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self.queue.lock();
        if let Some(pid) = self.busy.take() {
            st.busy.remove(&pid);
        }
        if self.counted {
            st.workers -= 1;
        }
    }
}

/// Delivers the queue's changes until none is left for it.
async fn work(queue: Arc<Queue>) {
    let mut slot = Slot {
        queue: queue.clone(),
        busy: None,
        counted: true,
    };
    loop {
        let (pid, pending, forwarder) = {
            let mut st = queue.lock();
            if let Some(pid) = slot.busy.take() {
                st.busy.remove(&pid);
            }
            let next = st.order.iter().position(|p| !st.busy.contains(p));
            let Some(pid) = next.and_then(|i| st.order.remove(i)) else {
                // Decided under the lock an enqueue takes, so no change is
                // left behind without a worker.
                st.workers -= 1;
                slot.counted = false;
                return;
            };
            let pending = st.pending.remove(&pid).unwrap_or_default();
            st.busy.insert(pid.clone());
            slot.busy = Some(pid.clone());
            (pid, pending, st.forwarder.clone())
        };
        forwarder.deliver(&queue, &pid, pending).await;
    }
}

impl Host {
    /// Sends what a call of `m` changed on its own behalf to the platforms
    /// its resources came from (nothing for resources of this host's own
    /// apps). Queued and delivered in the background, retried; failures are
    /// logged and audited.
    pub(super) fn forward_to_platforms(&self, m: &Arc<Manifest>, changes: Vec<ToPlatform>) {
        if changes.is_empty() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let forwarder = Arc::new(Forwarder {
            store: self.store.clone(),
            client: self.remote_http.clone(),
            manifest: m.clone(),
            platform: self.partner_platform(),
        });
        let queue = {
            let mut queues = self
                .deliveries
                .queues
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            queues
                .entry(m.id.clone())
                .or_insert_with(|| {
                    Arc::new(Queue {
                        state: Mutex::new(QueueState {
                            order: VecDeque::new(),
                            pending: HashMap::new(),
                            busy: HashSet::new(),
                            workers: 0,
                            forwarder: forwarder.clone(),
                        }),
                    })
                })
                .clone()
        };
        let spawn = {
            let mut st = queue.lock();
            st.forwarder = forwarder;
            for o in changes {
                let (pid, p) = Pending::of(o);
                match st.pending.get_mut(&pid) {
                    Some(older) => older.merge(p),
                    None => {
                        st.pending.insert(pid.clone(), p);
                        st.order.push_back(pid);
                    }
                }
            }
            let wanted = st.workers < MAX_IN_FLIGHT && st.has_work();
            if wanted {
                st.workers += 1;
            }
            wanted
        };
        if spawn {
            tokio::spawn(work(queue));
        }
    }
}

/// Delivers changes to calling platforms.
struct Forwarder {
    store: Arc<Store>,
    client: Client,
    manifest: Arc<Manifest>,
    /// The platform the operator configured: the only one called.
    platform: String,
}

impl Forwarder {
    async fn deliver(&self, queue: &Queue, pid: &str, mut pending: Pending) {
        let service = self.manifest.id.clone();
        let found = self.store.read(|tx| {
            let Some(r) = tx.resource_by_partner_id(&service, pid)? else {
                return Ok(None);
            };
            let link = tx.setting(&link_key(&r.uuid))?;
            Ok(link.map(|l| (r, l)))
        });
        let (r, link) = match found {
            Ok(Some((r, l))) => match serde_json::from_str::<Link>(&l) {
                Ok(link) => (r, link),
                Err(e) => {
                    tracing::error!(addon = %service, "unreadable platform link of {}: {e}", r.uuid);
                    return;
                }
            },
            // A resource of one of this host's own apps: nothing to send.
            Ok(None) => return,
            Err(e) => {
                tracing::error!(addon = %service, "cannot read the platform link: {e:#}");
                return;
            }
        };
        let mut last = String::new();
        if link.service != service || r.service != service {
            // A link is where one add-on's changes go: another add-on's
            // (planted before ownership was checked) never gets them.
            last = format!(
                "the platform link of {} belongs to add-on {}, not {service}",
                r.uuid, link.service
            );
        } else if link.platform.trim_end_matches('/') != self.platform {
            // Kept by an earlier version from the request's callback_url, or
            // before the operator changed --platform-api: never called.
            last = format!(
                "the resource came from {}, not from the platform this host is configured for",
                link.platform
            );
        } else {
            for attempt in 0..DELIVERY_ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                    // A change made meanwhile goes with this one.
                    if let Some(newer) = queue.take_newer(pid) {
                        pending.merge(newer);
                    }
                }
                match self.send(&r, link.clone(), &pending).await {
                    Ok(()) => {
                        tracing::info!(addon = %service, uuid = %r.uuid, "change delivered to {}", link.platform);
                        return;
                    }
                    Err((e, retry)) => {
                        tracing::warn!(addon = %service, uuid = %r.uuid, "delivery to {} failed: {e}", link.platform);
                        last = e;
                        if !retry {
                            break;
                        }
                    }
                }
            }
        }
        let (actor, name, app) = (format!("addon:{service}"), r.name.clone(), r.app.clone());
        let what = format!("not delivered to the platform {}: {last}", link.platform);
        let _ = self
            .store
            .write(move |tx| tx.audit(&actor, "partner:forward", Some(&app), Some(&name), &what))
            .await;
    }

    /// One attempt; the error says whether trying again may help.
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
            .map_err(|e| (e.to_string(), true))?;
        check(&url, &reply)?;
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
                .map_err(|e| (e.to_string(), true))?;
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
            .map_err(|e| (e.to_string(), true))?;
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
        if let Err(e) = self
            .store
            .write(move |tx| tx.put_setting(&key, Some(&json)))
            .await
        {
            tracing::warn!("cannot keep the platform token of {uuid}: {e:#}");
        }
        Ok(access)
    }
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

    fn config(pid: &str, changes: &[(&str, Option<&str>)]) -> Pending {
        let (p, pending) = Pending::of(ToPlatform::Config {
            partner_id: pid.into(),
            changes: changes
                .iter()
                .map(|(n, v)| (n.to_string(), v.map(str::to_string)))
                .collect(),
        });
        assert_eq!(p, pid);
        pending
    }

    #[test]
    fn a_pending_change_keeps_the_newest_value_of_each_var() {
        let mut p = config("r", &[("A", Some("1")), ("B", Some("1"))]);
        p.merge(config("r", &[("A", Some("2"))]));
        p.merge(config("r", &[("B", None), ("A", Some("3"))]));
        assert_eq!(
            p.changes,
            vec![("B".to_string(), None), ("A".to_string(), Some("3".into()))]
        );
        assert!(!p.provisioned);
        let (_, done) = Pending::of(ToPlatform::Provisioned {
            partner_id: "r".into(),
            config: vec![("A".into(), "4".into())],
        });
        p.merge(done);
        p.merge(config("r", &[("A", Some("5"))]));
        assert!(
            p.provisioned,
            "a completion is never lost to a later change"
        );
        assert_eq!(p.changes.last(), Some(&("A".to_string(), Some("5".into()))));
    }
}
