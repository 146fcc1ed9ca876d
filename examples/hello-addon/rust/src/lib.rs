//! hello in Rust: every HTTP request answers `hello`; the lifecycle answers
//! at once. See ../README.md.

use addonhost_sdk::http::{Handler, Request, Response};
use addonhost_sdk::{
    AddonError, Config, Credentials, Lifecycle, Login, ProvisionRequest, ProvisionResult,
    Provisioned, Sso, Verdict,
};

struct Hello;

impl Lifecycle for Hello {
    fn provision(req: ProvisionRequest) -> Result<ProvisionResult, AddonError> {
        Ok(ProvisionResult::Provisioned(Provisioned {
            id: format!("hello-{}", req.uuid),
            config: vec![("HELLO_RUST_URL".to_string(), req.base_url)],
            message: None,
        }))
    }

    fn deprovision(_id: String) -> Result<(), AddonError> {
        Ok(())
    }

    fn change_plan(_id: String, _plan: String) -> Result<Option<Config>, AddonError> {
        Ok(None)
    }
}

impl Credentials for Hello {
    fn rotate(_id: String) -> Result<Config, AddonError> {
        Err(AddonError::new("nothing to rotate"))
    }
}

impl Sso for Hello {
    fn verify(_login: Login) -> Verdict {
        Verdict::Denied("no dashboard".to_string())
    }
}

impl Handler for Hello {
    fn handle(_req: Request) -> Response {
        Response::text(200, "hello\n")
    }
}

addonhost_sdk::export_addon!(Hello);
addonhost_sdk::export_http!(Hello);
