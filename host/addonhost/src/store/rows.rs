//! The store's rows: what the [`Tx`](super::Tx) methods read and write,
//! the same for both backends.

use serde::Serialize;

/// An Open Service Broker service instance: the platform's id for one
/// resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsbInstance {
    /// The id the broker's client (the platform, e.g. Cloud Foundry) chose for
    /// the instance.
    pub instance_id: String,
    /// The uuid of the resource it names (made when the id was first seen).
    pub resource_uuid: String,
    /// What its provisioning asked for (JSON), to tell a retry from a
    /// conflicting request with the same id.
    pub request: String,
    /// When the broker first recorded it (Unix seconds).
    pub created_at: i64,
}

/// An Open Service Broker service binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsbBinding {
    /// The id the broker's client chose for the binding.
    pub binding_id: String,
    /// The instance it binds to ([`OsbInstance::instance_id`]).
    pub instance_id: String,
    /// What its creation asked for (JSON).
    pub request: String,
    /// Answered; `false` while a rotation making it runs (since `created_at`).
    pub ready: bool,
    /// The binding a rotation from this one is making or made.
    pub successor: Option<String>,
    /// The credentials it holds (JSON), once a rotation replaced them on
    /// the instance; `None` while they are the instance's current ones.
    pub credentials: Option<String>,
    /// When those credentials stop working (Unix seconds).
    pub expires_at: Option<i64>,
    /// When it was created or, for a rotation, when that rotation started (Unix
    /// seconds).
    pub created_at: i64,
}

/// A signed-in session as stored.
pub struct NewSession<'a> {
    /// Hex SHA-256 of the session id (the cookie).
    pub id_hash: &'a str,
    /// `dashboard`, or `sso:<add-on>`.
    pub kind: &'a str,
    /// What the session carries (JSON, opaque to the store).
    pub data: &'a str,
    /// When it stops being valid (Unix seconds).
    pub expires_at: i64,
    /// The current time (Unix seconds), to drop the sessions expired by then.
    pub now: i64,
    /// Most sessions of this kind kept.
    pub max: u64,
}

/// A change owed to the platform a resource came from (provider mode),
/// kept until it is delivered: at most one per resource, each later change
/// merged into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxEntry {
    /// The resource's platform uuid (the entry's key).
    pub uuid: String,
    /// The add-on whose change it is.
    pub service: String,
    /// JSON `[[name, value or null], …]`: the newest value of each var
    /// changed, by manifest name.
    pub changes: String,
    /// Whether an asynchronous provisioning completed: after the config,
    /// `actions/provision` is owed.
    pub provisioned: bool,
    /// Bumped by every change merged in, so a delivery of an older version
    /// does not end the entry.
    pub version: i64,
    /// Attempts that failed since the last change.
    pub attempts: i64,
    /// When the next attempt may start (Unix seconds).
    pub due_at: i64,
    /// The server delivering it now, and until when its claim holds.
    pub claimed_by: Option<String>,
    /// See `claimed_by`.
    pub claimed_until: Option<i64>,
    /// When it was given up on (it waits for an operator's retry).
    pub failed_at: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the first change of it was made.
    pub created_at: i64,
}

/// A server sharing the store.
#[derive(Debug, Clone, Serialize)]
pub struct ServerRow {
    /// The server's random id, new at every start.
    pub id: String,
    /// Where it serves (`http://host:port`).
    pub address: String,
    /// When it started (Unix seconds).
    pub started_at: i64,
    /// Its last heartbeat.
    pub seen_at: i64,
    /// JSON: add-on id → component hash it runs.
    #[serde(skip)]
    pub plugins: String,
}

/// The state of a resource (CONTRACT §Provision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceState {
    /// Reserved, or answered `pending` by the add-on.
    Provisioning,
    /// Answered by the add-on: in use, its config vars set.
    Provisioned,
    /// Being removed: its deprovision call is under way.
    Deprovisioning,
    /// Removed; kept for the record, listed nowhere.
    Deprovisioned,
    /// The add-on failed a pending provisioning: its attachments and vars are
    /// gone and its message says why. (A provision refused at once leaves no
    /// resource at all.)
    Failed,
}

impl ResourceState {
    /// The state as stored and shown (`provisioning`, …), the inverse of its
    /// `FromStr`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceState::Provisioning => "provisioning",
            ResourceState::Provisioned => "provisioned",
            ResourceState::Deprovisioning => "deprovisioning",
            ResourceState::Deprovisioned => "deprovisioned",
            ResourceState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ResourceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ResourceState {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "provisioning" => ResourceState::Provisioning,
            "provisioned" => ResourceState::Provisioned,
            "deprovisioning" => ResourceState::Deprovisioning,
            "deprovisioned" => ResourceState::Deprovisioned,
            "failed" => ResourceState::Failed,
            other => anyhow::bail!("unknown resource state {other:?} in the store"),
        })
    }
}

/// An app: a named application with config vars and releases.
#[derive(Debug, Clone, Serialize)]
pub struct App {
    /// The store's row id (not shown to users).
    #[serde(skip)]
    pub id: i64,
    /// Its unique name, as users type it.
    pub name: String,
    /// Where it runs (`us` or `eu`); what an add-on's provision is told.
    pub region: String,
    /// When it was created (Unix seconds).
    pub created_at: i64,
}

/// One provisioned add-on.
#[derive(Debug, Clone, Serialize)]
pub struct Resource {
    /// The store's row id (not shown to users).
    #[serde(skip)]
    pub id: i64,
    /// The platform's id, the idempotency key of provisioning.
    pub uuid: String,
    /// Its globally unique name (`kv-…`), what users and the dashboard call it.
    pub name: String,
    /// The add-on id (manifest `id`) of the service it belongs to.
    pub service: String,
    /// The plan it is on (a plan id of its manifest).
    pub plan: String,
    /// The app that owns (bills) it.
    pub app: String,
    /// The row id of [`Resource::app`].
    #[serde(skip)]
    pub app_id: i64,
    /// The add-on's own id for it, once the add-on answered.
    pub partner_id: Option<String>,
    /// Where it is in its lifecycle.
    pub state: ResourceState,
    /// What the add-on last said to show the user (its provision or plan change
    /// `message`, or why it failed).
    pub message: Option<String>,
    /// When it was reserved (Unix seconds).
    pub created_at: i64,
    /// When its state, plan or message last changed (Unix seconds).
    pub updated_at: i64,
    /// Unix seconds of the last successful rotation.
    pub rotated_at: Option<i64>,
    /// Why the last scheduled rotation failed, until one succeeds.
    pub rotation_error: Option<String>,
    /// Scheduled rotations failed in a row since the last success (drives the
    /// retry backoff).
    pub rotation_failures: i64,
    /// When a failed scheduled rotation is retried.
    pub next_rotation_at: Option<i64>,
    /// The provisioning call holding the reservation, while unanswered.
    #[serde(skip)]
    pub reserved_by: Option<String>,
    /// Until when (Unix seconds) that call holds it.
    #[serde(skip)]
    pub reserved_until: Option<i64>,
    /// What the provisioning asked for (JSON: plan, attachment name,
    /// options), to tell a retry from a different request with the same uuid.
    #[serde(skip)]
    pub request: Option<String>,
}

/// What a reservation writes of a new resource.
pub struct NewResource<'a> {
    /// The platform's id for it (the caller's idempotency key, or a fresh
    /// uuid).
    pub uuid: &'a str,
    /// Its globally unique name.
    pub name: &'a str,
    /// The add-on id.
    pub service: &'a str,
    /// The plan asked for.
    pub plan: &'a str,
    /// The app that owns it.
    pub app_id: i64,
    /// The call holding the reservation, and until when.
    pub reserved_by: &'a str,
    /// Until when (Unix seconds) [`NewResource::reserved_by`] holds it; past it
    /// another call may claim it.
    pub reserved_until: i64,
    /// What the provisioning asked for (JSON).
    pub request: &'a str,
}

/// The link of a resource to an app under a name.
#[derive(Debug, Clone, Serialize)]
pub struct Attachment {
    /// The store's row id; what owned config vars point at.
    #[serde(skip)]
    pub id: i64,
    /// The row id of the attached resource.
    #[serde(skip)]
    pub resource_id: i64,
    /// The name of the app it is attached to (not necessarily the resource's
    /// owner).
    pub app: String,
    /// The row id of that app.
    #[serde(skip)]
    pub app_id: i64,
    /// The attachment name (default the manifest prefix, e.g. `KV`): the
    /// add-on's vars appear on the app renamed under it.
    pub name: String,
}

/// A config var of an app: what its processes get in their environment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConfigVar {
    /// Its name, as the app sees it (after renaming to the attachment name).
    pub name: String,
    /// Its value.
    pub value: String,
    /// The owning attachment, `None` for the user.
    #[serde(skip)]
    pub attachment_id: Option<i64>,
}

/// One release of an app: every config change makes one, "rebuilding and
/// restarting" it.
#[derive(Debug, Clone, Serialize)]
pub struct Release {
    /// Its number, 1 for the first, gap-free per app.
    pub version: i64,
    /// What changed (`Initial release`, `Attach KV (kv-…)`, `Set FOO, BAR`, …).
    pub description: String,
    /// Who made it (`user`, or the add-on or platform acting on its own).
    pub actor: String,
    /// When it was made (Unix seconds).
    pub created_at: i64,
}

/// One line of the audit trail, as [`Tx::audit`](super::Tx::audit) wrote it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// When (Unix seconds).
    pub at: i64,
    /// Who acted.
    pub actor: String,
    /// What was done (`apps:create`, `addons:rotate`, …).
    pub action: String,
    /// The app concerned, if any.
    pub app: Option<String>,
    /// The add-on resource concerned (its name), if any.
    pub addon: Option<String>,
    /// Free text for the reader.
    pub detail: String,
}
