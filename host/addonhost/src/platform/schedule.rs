//! Scheduled credential rotation: the manifest's `rotation.every_seconds`
//! makes a running server call the add-on's `rotate` on time. The schedule
//! is derived from the store (last rotation, or provisioning), so rotations
//! missed while the server was down run once at start. A failed rotation
//! changes no var (rotation is one transaction), is recorded on the add-on,
//! and is retried with exponential backoff.

use std::sync::Arc;

use super::Host;
use crate::store::{Resource, ResourceState};
use crate::util::unix_now;

/// First retry delay after a failed scheduled rotation; doubles per failure.
pub const RETRY_BASE_SECONDS: i64 = 5;
/// Longest retry delay.
pub const RETRY_MAX_SECONDS: i64 = 3600;

/// When `r` is due next under a schedule of `every` seconds.
pub fn next_rotation(r: &Resource, every: Option<u64>) -> Option<i64> {
    let every = every? as i64;
    if r.state != ResourceState::Provisioned {
        return None;
    }
    if let Some(retry) = r.next_rotation_at {
        return Some(retry);
    }
    Some(r.rotated_at.unwrap_or(r.created_at) + every)
}

/// Retry delay after `failures` consecutive failures.
pub fn backoff(failures: i64) -> i64 {
    let exp = failures.clamp(0, 20) as u32;
    (RETRY_BASE_SECONDS.saturating_mul(1i64 << exp)).min(RETRY_MAX_SECONDS)
}

impl Host {
    /// Starts the rotation of every add-on whose schedule is due and that
    /// is not rotating already, each in a task of its own: a slow add-on
    /// delays no other's rotation. Returns how many were started.
    pub fn rotate_due(self: &Arc<Self>) -> usize {
        let now = unix_now();
        let mut due = Vec::new();
        for service in self.catalog().services() {
            let every = service.manifest.rotation.every_seconds;
            if every.is_none() {
                continue;
            }
            match self
                .store
                .read(|tx| tx.provisioned_of_service(&service.manifest.id))
            {
                Ok(resources) => due.extend(
                    resources
                        .into_iter()
                        .filter(|r| next_rotation(r, every).is_some_and(|t| t <= now)),
                ),
                Err(e) => {
                    tracing::error!("scheduled rotations skipped: {e:#}");
                    return 0;
                }
            }
        }
        let mut started = 0;
        for r in due {
            if !self
                .rotating
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(r.id)
            {
                continue;
            }
            started += 1;
            let host = self.clone();
            tokio::spawn(async move {
                // Every server sharing the store finds it due; one runs it.
                match host.claim_rotation(&r).await {
                    Ok(true) => {
                        host.count_rotation(&r.service, "due");
                        host.rotate_on_schedule(&r).await
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(addon = %r.name, "cannot claim the scheduled rotation: {e:#}")
                    }
                }
                host.rotating
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&r.id);
            });
        }
        started
    }

    fn count_rotation(&self, service: &str, outcome: &'static str) {
        self.metrics()
            .scheduled_rotations
            .get_or_create(&crate::metrics::AddonOutcome {
                addon: service.to_string(),
                outcome,
            })
            .inc();
    }

    /// One scheduled rotation; a failure is recorded on the add-on, with
    /// when to retry.
    async fn rotate_on_schedule(&self, r: &Resource) {
        let Err(e) = self.rotate_resource(r, "schedule").await else {
            self.count_rotation(&r.service, "ok");
            return;
        };
        self.count_rotation(&r.service, "failed");
        let message = format!("{e:#}");
        tracing::warn!(addon = %r.name, "scheduled rotation failed: {message}");
        let retry_at = unix_now() + backoff(r.rotation_failures);
        let failure = (r.clone(), message);
        let recorded = self.store.write(move |tx| {
            let (r, message) = &failure;
            tx.rotation_failed(r.id, message, retry_at)?;
            tx.audit(
                "schedule",
                "addons:rotate",
                Some(&r.app),
                Some(&r.name),
                &format!("failed: {message}"),
            )?;
            Ok(())
        });
        if let Err(e) = recorded.await {
            tracing::error!(addon = %r.name, "cannot record the failed rotation: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), 5);
        assert_eq!(backoff(1), 10);
        assert_eq!(backoff(3), 40);
        assert_eq!(backoff(40), 3600);
    }
}
