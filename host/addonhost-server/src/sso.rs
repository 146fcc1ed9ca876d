//! Single sign-on (CONTRACT §SSO).
//!
//! `/myapps/<app>/addons/<attachment>`, on the platform's origin, signs a
//! login and hands the browser an auto-submitting form that posts it to the
//! add-on's own origin (`http://kv.localhost:5000/sso/login`). There the
//! plugin's `sso.verify` decides; on success the browser gets a session
//! cookie of that origin only, `heroku-nav-data`, and a 302 to the add-on's
//! dashboard on the same origin.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::dashboard::{self, encode, set_cookie};
use crate::{Server, SsoSession, MAX_SESSIONS_PER_USER, SESSION_TTL};
use addonhost::platform::sso::FormRefused;
use addonhost::runtime::Verdict;

/// The add-on session cookie's name for `service`: `addonhost_sso_<svc>`,
/// `__Host-` prefixed behind https (so a sibling add-on's origin, which
/// may set cookies for the whole `--addons-domain`, cannot set it).
pub fn cookie_name(server: &Server, service: &str) -> String {
    server.session_cookie(&format!("addonhost_sso_{}", service.replace('-', "_")))
}

#[derive(Template)]
#[template(path = "sso_form.html")]
struct SsoFormPage<'a> {
    action: String,
    fields: &'a [(String, String)],
}

#[derive(Template)]
#[template(path = "sso_denied.html")]
struct SsoDenied<'a> {
    heading: &'a str,
    message: String,
}

/// `GET /myapps/<app>/addons/<attachment>`: sign and post the login.
pub async fn start(
    State(server): State<Arc<Server>>,
    Path((app, attachment)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let signed_in = match dashboard::signed_in(&server, &headers) {
        Ok(yes) => yes,
        Err(e) => return dashboard::error_page(&e),
    };
    if !signed_in {
        let mut next = format!("/myapps/{}/addons/{}", encode(&app), encode(&attachment));
        if let Some(q) = &query {
            next = format!("{next}?{q}");
        }
        return dashboard::to_login(&next);
    }
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let now = addonhost::util::unix_now();
    let form = match server
        .host
        .sso_form(&app, &attachment, &server.email, &params, now)
    {
        Ok(f) => f,
        Err(e) => return dashboard::error_page(&e.into()),
    };
    let action = match &form.action {
        // A remote add-on: the form goes to its provider.
        Some(a) => a.clone(),
        None => format!("{}/sso/login", server.host.addon_origin(&form.service)),
    };
    let page = SsoFormPage {
        action,
        fields: &form.fields,
    };
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn denied(status: StatusCode, heading: &str, message: String) -> Response {
    match (SsoDenied { heading, message }).render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `POST /sso/login` on the add-on's origin: the plugin decides.
pub async fn login(server: &Arc<Server>, service: &str, body: &[u8]) -> Response {
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    login_fields(server, service, fields).await
}

/// A login from its fields (a posted form, or a query with the id in the
/// path for the Partner API's `GET /heroku/resources/:id`). The host checks
/// the form first (a missing field is a 400; a wrong, malformed, stale or
/// used form a 403), then the plugin decides; the form is spent with the
/// session it makes.
pub async fn login_fields(
    server: &Arc<Server>,
    service: &str,
    fields: Vec<(String, String)>,
) -> Response {
    let checked = match server.host.sso_check_form(service, &fields) {
        Ok(c) => c,
        Err(FormRefused::Missing(why)) => {
            return denied(StatusCode::BAD_REQUEST, "400 Bad Request", why)
        }
        Err(FormRefused::Denied(why)) => return refused(format!("The sign-in was refused: {why}")),
        Err(FormRefused::Platform(e)) => return failed(e),
    };
    let nav = checked.login.nav_data.clone();
    let resource = checked.login.id.clone();
    match server.host.sso_verify(service, checked.login).await {
        Ok(Verdict::Ok(session)) => {
            // One user of one resource spends only their own sessions.
            let owner = format!("{resource}\n{}", session.user);
            let made = server
                .sso_sessions(service)
                .create_owned(
                    &SsoSession {
                        service: service.to_string(),
                        user: session.user,
                        resource,
                    },
                    &owner,
                    MAX_SESSIONS_PER_USER,
                    Some((checked.form_key, checked.key_expires_at)),
                )
                .await;
            let id = match made {
                Ok(Some(id)) => id,
                // Posted twice at once: the other post spent it.
                Ok(None) => {
                    return refused(
                        "The sign-in was refused: this sign-in form was used already: \
                         sign in again from the platform"
                            .into(),
                    )
                }
                Err(e) => return crate::error::ApiError::from(e).into_response(),
            };
            let landing = landing_path(session.landing);
            let mut r = Redirect::to(&landing).into_response();
            *r.status_mut() = StatusCode::FOUND;
            // Host-only cookies of the add-on's origin: no other add-on and
            // not the platform ever receives them.
            let secure = server.cookie_attributes();
            set_cookie(
                &mut r,
                &format!(
                    "{}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
                    cookie_name(server, service),
                    SESSION_TTL.as_secs()
                ),
            );
            set_cookie(
                &mut r,
                &format!(
                    "heroku-nav-data={}; Path=/; SameSite=Lax{secure}",
                    encode(&nav)
                ),
            );
            r
        }
        Ok(Verdict::Denied(why)) => refused(format!("The add-on refused the login: {why}")),
        Err(e) => failed(e),
    }
}

/// A 403 page saying why.
fn refused(message: String) -> Response {
    denied(StatusCode::FORBIDDEN, "403 Forbidden", message)
}

/// The page of a sign-in the platform could not complete.
fn failed(e: addonhost::Error) -> Response {
    let e = anyhow::Error::from(e);
    let status = match crate::error::status_of(&e) {
        StatusCode::NOT_FOUND => StatusCode::NOT_FOUND,
        StatusCode::SERVICE_UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    denied(status, "Sign-in failed", format!("{e:#}"))
}

/// The identity of a request to `service`'s origin, from its session
/// cookie: only for requests the add-on's own pages make (a form another
/// origin posts here gets none).
pub fn identity(
    server: &Server,
    service: &str,
    headers: &HeaderMap,
    safe_method: bool,
) -> Option<SsoSession> {
    if !safe_method {
        let origin = headers
            .get(axum::http::header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        if origin.is_some_and(|o| o != server.host.addon_origin(service)) {
            return None;
        }
    }
    let id = dashboard::cookie(headers, &cookie_name(server, service))?;
    match server.sso_sessions(service).get(&id) {
        Ok(session) => session.filter(|s| s.service == service),
        Err(e) => {
            // The page is then served without an identity, as to anyone
            // signed out; it cannot be served as someone else.
            tracing::warn!(addon = %service, "cannot read the SSO session: {e:#}");
            None
        }
    }
}

/// Where a login lands: the plugin's page when it is a path of the add-on's
/// own origin, else `/`. Browsers read `\` as `/` and drop tabs and
/// newlines, so `/\evil.example` or `/<tab>/evil.example` would be the
/// scheme-relative `//evil.example`: a backslash, whitespace or a control
/// character anywhere is refused outright, as is a second leading `/`.
fn landing_path(landing: String) -> String {
    let plain = landing.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    if plain && landing.starts_with('/') && !landing.starts_with("//") {
        landing
    } else {
        "/".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plugin (or whoever crafts its landing) sends the browser elsewhere
    /// with what browsers read as another origin: a backslash is a slash to
    /// them, tabs and newlines are dropped, and a scheme-relative `//` is a
    /// host.
    #[test]
    fn a_landing_that_browsers_read_as_another_origin_lands_on_the_root() {
        for attack in [
            "//evil.example",
            "/\\evil.example",
            "\\/evil.example",
            "/\\/evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "/ /evil.example",
            "https://evil.example",
            "javascript:alert(1)",
            "/dashboard\\..\\..\\evil",
            "",
        ] {
            assert_eq!(landing_path(attack.to_string()), "/", "{attack:?}");
        }
        for fine in ["/", "/dashboard/abc?x=1&y=%2F%2F#top", "/a//b"] {
            assert_eq!(landing_path(fine.to_string()), fine);
        }
    }
}
