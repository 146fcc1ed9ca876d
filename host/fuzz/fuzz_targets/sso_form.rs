//! A posted SSO form (urlencoded) must parse or be refused, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(data).into_owned().collect();
    if let Ok(login) = addonhost::platform::sso::login_from_fields(&fields) {
        let _ = addonhost::sso::verify(&login.id, "salt", login.timestamp, &login.token, 0);
    }
});
