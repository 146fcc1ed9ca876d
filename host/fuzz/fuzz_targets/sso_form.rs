//! A posted SSO form (urlencoded) must parse or be refused, never panic; a
//! parsed one goes through the whole check, at a time near its own timestamp
//! so that the token comparisons are reached too.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(data).into_owned().collect();
    if let Ok(login) = addonhost::platform::sso::login_from_fields(&fields) {
        for now in [0, login.timestamp, login.timestamp.wrapping_add(1)] {
            let _ = addonhost::sso::check(
                &login.id,
                &login.resource_id,
                &login.token,
                &login.resource_token,
                login.timestamp,
                "salt",
                now,
            );
        }
    }
});
