//! Signed-in sessions (the dashboard's, and each add-on's after SSO): random
//! ids handed out as cookies, each valid for a while. Bounded in number as
//! well as age, so a client signing in in a loop cannot grow the server's
//! memory: past the bound the oldest sessions go first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;

/// Sessions of one kind, each carrying a `T`.
pub struct Sessions<T> {
    ttl: Duration,
    max: usize,
    map: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T: Clone> Sessions<T> {
    /// Sessions valid for `ttl`, at most `max` of them at once.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Sessions {
            ttl,
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// A new session carrying `value`; its id.
    pub fn create(&self, value: T) -> String {
        let id = random_id();
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.max {
            map.retain(|_, (expires, _)| *expires > now);
        }
        while map.len() >= self.max {
            let oldest = map
                .iter()
                .min_by_key(|(_, (expires, _))| *expires)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(id.clone(), (now + self.ttl, value));
        id
    }

    /// The value of session `id`, if it exists and has not expired.
    pub fn get(&self, id: &str) -> Option<T> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id)
            .filter(|(expires, _)| *expires > Instant::now())
            .map(|(_, v)| v.clone())
    }

    /// Ends session `id`.
    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Sessions held now (expired ones included until they are swept).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// 32 random bytes as hex: session ids and tokens.
pub fn random_id() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_are_bounded_in_number() {
        let s = Sessions::new(Duration::from_secs(60), 3);
        let ids: Vec<_> = (0..5).map(|i| s.create(i)).collect();
        assert_eq!(s.len(), 3);
        // The oldest went first; the newest are valid.
        assert_eq!(s.get(&ids[0]), None);
        assert_eq!(s.get(&ids[4]), Some(4));
        s.remove(&ids[4]);
        assert_eq!(s.get(&ids[4]), None);
        let short = Sessions::new(Duration::ZERO, 10);
        let id = short.create(());
        assert_eq!(short.get(&id), None);
    }
}
