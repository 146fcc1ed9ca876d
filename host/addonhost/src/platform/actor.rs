//! Who a change is recorded as, in releases and the audit trail.
//!
//! The audit trail keeps `--audit-keep` entries of each actor, so an actor
//! is a bound: whoever can make entries under an actor can push out only
//! that actor's older ones. Actors therefore come from a small set the
//! platform names, never from what a caller claims: the user (the CLI, the
//! API, the dashboard), each add-on acting on its own behalf
//! (`addon:<id>`), each add-on's partner through the Partner API
//! (`partner:<id>`) and through the Platform API (`platform-api:<id>`),
//! the service broker (`osb`: a broker client's claimed identity goes in
//! the entry's detail), the scheduler (`schedule`). Add-on ids come from
//! the catalog, so the set grows only with the plugins installed.

/// The operator: the CLI, the JSON API, the dashboard.
pub const USER: &str = "user";

/// The Open Service Broker's clients, whoever they claim to be.
pub const OSB: &str = "osb";

/// Add-on `id`'s partner calling the Partner API (provider mode).
pub fn partner(id: &str) -> String {
    format!("partner:{id}")
}

/// Add-on `id`'s provider calling the Platform API back (platform mode).
pub fn platform_api(id: &str) -> String {
    format!("platform-api:{id}")
}

/// Add-on `id`'s own calls (a plugin's HTTP handler, its scheduled ticks).
pub fn addon(id: &str) -> String {
    format!("addon:{id}")
}

/// Whether `actor` is a partner calling the Partner API: what it changes
/// it asked for, so nothing goes back to its platform.
pub fn is_partner(actor: &str) -> bool {
    actor.starts_with("partner:")
}
