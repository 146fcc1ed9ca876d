//! The smallest Rust add-on: every export answers at once, with no host
//! round trip. It measures what a plugin call costs by itself.

use addonhost_sdk::{
    AddonError, Config, Credentials, Lifecycle, Login, ProvisionRequest, ProvisionResult,
    Provisioned, Sso, Verdict,
};

struct Minimal;

impl Lifecycle for Minimal {
    fn provision(req: ProvisionRequest) -> Result<ProvisionResult, AddonError> {
        Ok(ProvisionResult::Provisioned(Provisioned {
            id: format!("minimal-{}", req.uuid),
            config: vec![(
                "MINIMAL_URL".to_string(),
                format!("{}/{}", req.base_url, req.uuid),
            )],
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

impl Credentials for Minimal {
    fn rotate(id: String) -> Result<Config, AddonError> {
        Err(AddonError::new(format!(
            "{id} has no credentials to rotate"
        )))
    }
}

impl Sso for Minimal {
    fn verify(_login: Login) -> Verdict {
        Verdict::Denied("the minimal add-on has no dashboard".to_string())
    }
}

addonhost_sdk::export_addon!(Minimal);
