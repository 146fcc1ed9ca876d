//! Signed-in sessions (the dashboard's, and each add-on's after SSO): random
//! ids handed out as cookies, each valid for a while. They live in the
//! store, so a session made on one server is valid on every server sharing
//! it (and across a restart); the store keeps only a hash of each id.
//! Bounded in number as well as age, so a client signing in in a loop
//! cannot grow the store: past the bound the oldest sessions go first.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use addonhost::Host;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Sessions of one kind, each carrying a `T`.
pub struct Sessions<T> {
    host: Arc<Host>,
    kind: String,
    ttl: Duration,
    max: u64,
    _value: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Sessions<T> {
    /// Sessions of `kind`, valid for `ttl`, at most `max` of them at once.
    pub fn new(host: Arc<Host>, kind: &str, ttl: Duration, max: u64) -> Self {
        Sessions {
            host,
            kind: kind.to_string(),
            ttl,
            max,
            _value: PhantomData,
        }
    }

    /// A new session carrying `value`; its id.
    pub async fn create(&self, value: &T) -> anyhow::Result<String> {
        let data = serde_json::to_string(value)?;
        Ok(self
            .host
            .create_session(&self.kind, data, self.ttl, self.max)
            .await?)
    }

    /// A new session carrying `value` that belongs to `owner` (at most
    /// `max_per_owner` of the owner's are kept, its oldest going first),
    /// spending the single-use token `once` with it; `None` when that token
    /// was spent already.
    pub async fn create_owned(
        &self,
        value: &T,
        owner: &str,
        max_per_owner: u64,
        once: Option<(String, i64)>,
    ) -> anyhow::Result<Option<String>> {
        let data = serde_json::to_string(value)?;
        Ok(self
            .host
            .create_owned_session(
                &self.kind,
                data,
                self.ttl,
                self.max,
                owner,
                max_per_owner,
                once,
            )
            .await?)
    }

    /// The value of session `id`, if it exists and has not expired.
    pub fn get(&self, id: &str) -> anyhow::Result<Option<T>> {
        match self.host.session(&self.kind, id)? {
            Some(data) => Ok(serde_json::from_str(&data).ok()),
            None => Ok(None),
        }
    }

    /// Ends session `id`.
    pub async fn remove(&self, id: &str) -> anyhow::Result<()> {
        Ok(self.host.end_session(id).await?)
    }
}

/// 32 random bytes as hex: tokens.
pub fn random_id() -> String {
    addonhost::platform::cluster::random_token()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn sessions_expire_and_are_bounded_in_number() {
        let dir = tempfile::tempdir().unwrap();
        let host =
            Arc::new(Host::open(addonhost::HostOptions::new(dir.path(), Vec::new())).unwrap());
        let s = Sessions::new(host.clone(), "test", Duration::from_secs(60), 3);
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(s.create(&i).await.unwrap());
        }
        // The oldest went first; the newest are valid.
        assert_eq!(s.get(&ids[0]).unwrap(), None);
        assert_eq!(s.get(&ids[1]).unwrap(), None);
        assert_eq!(s.get(&ids[2]).unwrap(), Some(2));
        assert_eq!(s.get(&ids[4]).unwrap(), Some(4));
        s.remove(&ids[4]).await.unwrap();
        assert_eq!(s.get(&ids[4]).unwrap(), None);
        // A session of one kind is not one of another.
        let other: Sessions<i32> = Sessions::new(host.clone(), "other", Duration::from_secs(60), 3);
        assert_eq!(other.get(&ids[3]).unwrap(), None);
        let short = Sessions::new(host, "short", Duration::ZERO, 10);
        let id = short.create(&()).await.unwrap();
        assert_eq!(short.get(&id).unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_owner_spends_only_its_own_sessions_and_a_token_once() {
        let dir = tempfile::tempdir().unwrap();
        let host =
            Arc::new(Host::open(addonhost::HostOptions::new(dir.path(), Vec::new())).unwrap());
        let s = Sessions::new(host, "sso:test", Duration::from_secs(60), 100);
        let other = s.create_owned(&0, "bob", 2, None).await.unwrap().unwrap();
        let mut hers = Vec::new();
        for i in 1..=5 {
            hers.push(s.create_owned(&i, "alice", 2, None).await.unwrap().unwrap());
        }
        // Alice's two newest are kept; Bob's is untouched.
        assert_eq!(s.get(&other).unwrap(), Some(0));
        assert_eq!(s.get(&hers[2]).unwrap(), None);
        assert_eq!(s.get(&hers[3]).unwrap(), Some(4));
        assert_eq!(s.get(&hers[4]).unwrap(), Some(5));
        // A token is spent once.
        let once = || Some(("form:1".to_string(), addonhost::util::unix_now() + 60));
        assert!(s
            .create_owned(&6, "carol", 2, once())
            .await
            .unwrap()
            .is_some());
        assert!(s
            .create_owned(&7, "carol", 2, once())
            .await
            .unwrap()
            .is_none());
    }
}
