//! The grants and tokens of the Platform API a remote provider calls back
//! with (Heroku's shapes: an `oauth_grant` in the provision request, traded
//! at `/oauth/token` for an access token scoped to that one resource).
//!
//! They are signed: each names its kind, the add-on service and the
//! resource uuid, and carries an expiry, under an HMAC-SHA256 with a key
//! the store keeps for every server, so a token made by one server is good
//! on all of them. Tokens also name the resource's row (a token dies with
//! its resource, even if a later one takes its uuid), and a refresh token a
//! nonce: the store keeps the one current nonce per resource, so a refresh
//! hands out the next refresh token and the old one stops working. A grant
//! is spent when traded (`Tx::spend_once`), so it is traded once.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a grant may wait before it is traded.
pub const GRANT_SECONDS: i64 = 15 * 60;
/// How long an access token is good (Heroku's: eight hours).
pub const ACCESS_SECONDS: i64 = 8 * 3600;
/// How long a refresh token is good.
pub const REFRESH_SECONDS: i64 = 365 * 24 * 3600;

/// What a grant or token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The one-time grant in a provision request's `oauth_grant` (good for
    /// [`GRANT_SECONDS`]).
    Grant,
    /// A bearer token for the Platform API (good for [`ACCESS_SECONDS`]).
    Access,
    /// A token traded for a new access token (good for [`REFRESH_SECONDS`]).
    Refresh,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Grant => "g",
            Kind::Access => "a",
            Kind::Refresh => "r",
        }
    }
}

/// What a valid grant or token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The add-on id it was issued to.
    pub service: String,
    /// The resource (platform uuid) it gives access to.
    pub uuid: String,
    /// When it stops being accepted (Unix seconds).
    pub expires_at: i64,
    /// The resource's row it was issued for (access and refresh tokens;
    /// `None` in a grant, made before the resource answered, and in tokens
    /// of earlier versions).
    pub resource: Option<i64>,
    /// A refresh token's nonce: only the newest of a resource is current.
    pub nonce: Option<String>,
}

/// Makes and checks grants and tokens with one key.
#[derive(Clone)]
pub struct Grants {
    key: Vec<u8>,
}

impl Grants {
    /// Grants and tokens signed (HMAC-SHA256) with `key`: every server sharing
    /// a store uses the same key, so a token made by one opens on all.
    pub fn new(key: &[u8]) -> Grants {
        Grants { key: key.to_vec() }
    }

    fn mac(&self, text: &str) -> Vec<u8> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        m.update(text.as_bytes());
        m.finalize().into_bytes().to_vec()
    }

    /// A `kind` for `service`'s resource `uuid`, good until `expires_at`.
    pub fn sign(&self, kind: Kind, service: &str, uuid: &str, expires_at: i64) -> String {
        self.seal(kind, &format!("{service}\n{uuid}\n{expires_at}"))
    }

    /// A `kind` for `service`'s resource `uuid` at row `resource`, good
    /// until `expires_at`, carrying `nonce` (empty for none).
    pub fn sign_bound(
        &self,
        kind: Kind,
        (service, uuid, resource): (&str, &str, i64),
        expires_at: i64,
        nonce: &str,
    ) -> String {
        self.seal(
            kind,
            &format!("{service}\n{uuid}\n{expires_at}\n{resource}\n{nonce}"),
        )
    }

    fn seal(&self, kind: Kind, payload: &str) -> String {
        let payload = B64.encode(payload);
        let text = format!("{}.{payload}", kind.tag());
        let mac = B64.encode(self.mac(&text));
        format!("{text}.{mac}")
    }

    /// What `token` names, if it is a `kind` this key signed and it has not
    /// expired at `now`; the error says which of those failed.
    pub fn open(&self, kind: Kind, token: &str, now: i64) -> Result<Claims, String> {
        let mut parts = token.trim().splitn(3, '.');
        let (Some(tag), Some(payload), Some(mac)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("malformed".into());
        };
        if tag != kind.tag() {
            return Err("of the wrong kind".into());
        }
        let mac = B64.decode(mac).map_err(|_| "malformed".to_string())?;
        let mut check = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        check.update(format!("{tag}.{payload}").as_bytes());
        check
            .verify_slice(&mac)
            .map_err(|_| "not signed by this platform".to_string())?;
        let payload = B64.decode(payload).map_err(|_| "malformed".to_string())?;
        let payload = String::from_utf8(payload).map_err(|_| "malformed".to_string())?;
        let mut fields = payload.split('\n');
        let (Some(service), Some(uuid), Some(exp)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err("malformed".into());
        };
        let expires_at: i64 = exp.parse().map_err(|_| "malformed".to_string())?;
        if expires_at < now {
            return Err("expired".into());
        }
        let resource = match fields.next() {
            Some(id) => Some(id.parse().map_err(|_| "malformed".to_string())?),
            None => None,
        };
        let nonce = fields.next().filter(|n| !n.is_empty()).map(str::to_string);
        Ok(Claims {
            service: service.to_string(),
            uuid: uuid.to_string(),
            expires_at,
            resource,
            nonce,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_only_as_its_kind_unexpired_and_unaltered() {
        let g = Grants::new(b"key");
        let t = g.sign(Kind::Access, "kv", "u-1", 100);
        assert_eq!(
            g.open(Kind::Access, &t, 99),
            Ok(Claims {
                service: "kv".into(),
                uuid: "u-1".into(),
                expires_at: 100,
                resource: None,
                nonce: None,
            })
        );
        let bound = g.sign_bound(Kind::Refresh, ("kv", "u-1", 7), 100, "n-1");
        let claims = g.open(Kind::Refresh, &bound, 99).unwrap();
        assert_eq!(
            (claims.resource, claims.nonce.as_deref()),
            (Some(7), Some("n-1"))
        );
        assert_eq!(g.open(Kind::Access, &t, 101), Err("expired".into()));
        assert!(g.open(Kind::Refresh, &t, 0).is_err());
        assert!(Grants::new(b"other").open(Kind::Access, &t, 0).is_err());
        let forged = g
            .sign(Kind::Access, "kv", "u-2", 100)
            .split('.')
            .nth(1)
            .map(|p| format!("a.{p}.{}", t.rsplit('.').next().unwrap()))
            .unwrap();
        assert!(g.open(Kind::Access, &forged, 0).is_err(), "payload swapped");
    }
}
