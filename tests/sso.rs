//! The SSO rules (CONTRACT §SSO) as each SDK applies them inside a real
//! add-on: kv (Rust SDK), queue (Python SDK) and flags (JavaScript SDK)
//! accept a login exactly 300 s old or 60 s ahead and refuse one a second
//! beyond either bound, refuse a valid `token` beside a wrong
//! `resource_token`, and deny (not fail on) tokens that are not hex at all
//! (kensa's `token=invalid` among them).
//! The reasons they give are the shared crate's, word for word.

use crate::support::*;
use addonhost::manifest::Manifest;
use addonhost::runtime::capabilities::InMemory;
use addonhost::runtime::{Login, Plugin, ProvisionRequest, ProvisionResult, Runtime, Verdict};
use addonhost::sso::{self, Denied, MAX_AGE_SECONDS, MAX_SKEW_SECONDS};

/// An example add-on loaded into the runtime, with one provisioned resource.
struct Addon {
    name: &'static str,
    plugin: Plugin,
    caps: InMemory,
    salt: String,
    id: String,
    uuid: String,
}

impl Addon {
    async fn provision(runtime: &Runtime, name: &'static str) -> Addon {
        let manifest = Manifest::load(&root().join("plugins").join(name)).unwrap();
        let plugin = runtime
            .load(&manifest.id, &manifest.component, manifest.limits)
            .unwrap();
        let caps = InMemory::default();
        let uuid = uuid::Uuid::new_v4().to_string();
        let request = ProvisionRequest {
            uuid: uuid.clone(),
            app: "shop".into(),
            name: manifest.api.config_vars_prefix.clone(),
            plan: manifest.default_plan().id.clone(),
            region: "us".into(),
            options: Vec::new(),
            base_url: format!("http://127.0.0.1:5000/addons/{name}"),
        };
        let id = match plugin
            .provision(Box::new(caps.clone()), request)
            .await
            .unwrap()
        {
            ProvisionResult::Provisioned(p) => {
                caps.set_config(&p.id, p.config);
                p.id
            }
            ProvisionResult::Pending(p) => p.id,
        };
        Addon {
            name,
            plugin,
            caps,
            salt: manifest.api.sso_salt.clone(),
            id,
            uuid,
        }
    }

    /// The login the platform would post at `timestamp`, correctly signed.
    fn login(&self, timestamp: i64) -> Login {
        Login {
            id: self.id.clone(),
            token: sso::token(&self.id, &self.salt, timestamp),
            resource_id: self.uuid.clone(),
            resource_token: sso::token(&self.uuid, &self.salt, timestamp),
            timestamp,
            email: "owner@example.com".into(),
            app: "shop".into(),
            context_app: "shop".into(),
            nav_data: "{}".into(),
            params: Vec::new(),
        }
    }

    /// The verdict on the login `make(now)` builds, `now` being the second
    /// the add-on's own clock reads too: a call that straddles a second
    /// boundary is made again, so the bounds are tested to the second.
    async fn verdict_at_now(&self, make: impl Fn(i64) -> Login) -> Verdict {
        loop {
            let now = unix_now();
            let verdict = self
                .plugin
                .verify(Box::new(self.caps.clone()), make(now))
                .await
                .unwrap_or_else(|e| {
                    panic!("{}: verify failed instead of answering: {e}", self.name)
                });
            if unix_now() == now {
                return verdict;
            }
        }
    }

    async fn accepts(&self, what: &str, make: impl Fn(i64) -> Login) {
        let verdict = self.verdict_at_now(make).await;
        assert!(
            matches!(verdict, Verdict::Ok(_)),
            "{}: {what} was refused: {verdict:?}",
            self.name
        );
    }

    async fn refuses(&self, what: &str, make: impl Fn(i64) -> Login, why: Denied) {
        match self.verdict_at_now(make).await {
            Verdict::Denied(reason) => assert_eq!(reason, why.to_string(), "{}: {what}", self.name),
            Verdict::Ok(_) => panic!("{}: {what} was accepted", self.name),
        }
    }
}

#[tokio::test]
async fn every_sdk_keeps_the_freshness_bounds_to_the_second_and_checks_resource_token() {
    plugins_built();
    polyglot_built();
    let runtime = Runtime::new(None).unwrap();
    for name in ["kv", "queue", "flags"] {
        let addon = Addon::provision(&runtime, name).await;
        let a = &addon;

        a.accepts("a login signed now", |now| a.login(now)).await;
        a.accepts("a login exactly 300 s old", |now| {
            a.login(now - MAX_AGE_SECONDS)
        })
        .await;
        a.refuses(
            "a login 301 s old",
            |now| a.login(now - MAX_AGE_SECONDS - 1),
            Denied::Stale { age_seconds: 301 },
        )
        .await;
        a.accepts("a login exactly 60 s ahead", |now| {
            a.login(now + MAX_SKEW_SECONDS)
        })
        .await;
        a.refuses(
            "a login 61 s ahead",
            |now| a.login(now + MAX_SKEW_SECONDS + 1),
            Denied::Future { ahead_seconds: 61 },
        )
        .await;

        // A valid token beside a resource_token signed for another resource,
        // beside none, and beside the id's own token.
        let other = uuid::Uuid::new_v4().to_string();
        for (what, wrong) in [
            ("another resource's resource_token", Some(other.as_str())),
            ("an empty resource_token", None),
        ] {
            a.refuses(
                what,
                |now| Login {
                    resource_token: wrong
                        .map(|uuid| sso::token(uuid, &a.salt, now))
                        .unwrap_or_default(),
                    ..a.login(now)
                },
                Denied::BadResourceToken,
            )
            .await;
        }
        a.refuses(
            "the id's token as resource_token",
            |now| {
                let login = a.login(now);
                Login {
                    resource_token: login.token.clone(),
                    ..login
                }
            },
            Denied::BadResourceToken,
        )
        .await;

        // Tokens that are no hex digest: denied like any wrong token (kensa
        // posts the literal `invalid`), never a failed call.
        for token in ["invalid", ""] {
            a.refuses(
                &format!("token {token:?}"),
                |now| Login {
                    token: token.into(),
                    ..a.login(now)
                },
                Denied::BadToken,
            )
            .await;
        }
        let not_hex = "é".repeat(20);
        a.refuses(
            "a non-ASCII token",
            |now| Login {
                token: not_hex.clone(),
                ..a.login(now)
            },
            Denied::BadToken,
        )
        .await;
        a.refuses(
            "a non-ASCII resource_token",
            |now| Login {
                resource_token: not_hex.clone(),
                ..a.login(now)
            },
            Denied::BadResourceToken,
        )
        .await;
    }
}
