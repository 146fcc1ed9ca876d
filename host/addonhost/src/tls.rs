//! The one TLS client of this host: every HTTPS request it makes — its own
//! calls to remote providers and calling platforms, and the add-ons'
//! outbound requests — is verified the same way, by rustls (ring's
//! algorithms, TLS 1.2 and 1.3) against Mozilla's root store, the
//! certificate checked against the name called.
//!
//! The operator may add roots (a private CA, `--extra-ca FILE`): the only
//! way to make this host trust a certificate Mozilla's roots do not. There
//! is no switch that turns verification off.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::CertificateDer;

/// Which roots this host's HTTPS clients trust, and the client
/// configuration made of them (shared by every connection).
#[derive(Clone)]
pub struct Trust {
    /// The operator's extra roots (DER), and the file they came from.
    extra: Arc<Vec<CertificateDer<'static>>>,
    source: Option<PathBuf>,
    config: Arc<rustls::ClientConfig>,
}

impl Default for Trust {
    /// Mozilla's roots alone.
    fn default() -> Trust {
        static MOZILLA: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
        Trust {
            extra: Arc::default(),
            source: None,
            config: MOZILLA
                .get_or_init(|| client_config(&[]).expect("Mozilla's roots make a TLS client"))
                .clone(),
        }
    }
}

impl PartialEq for Trust {
    fn eq(&self, other: &Trust) -> bool {
        self.extra == other.extra
    }
}

impl Eq for Trust {}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("extra_roots", &self.extra.len())
            .field("source", &self.source)
            .finish()
    }
}

impl Trust {
    /// Mozilla's roots and every certificate of the PEM file `path` (the
    /// operator's `--extra-ca`). A file that cannot be read, holds no
    /// certificate or one rustls cannot use as a root is an error naming it.
    pub fn with_extra_ca(path: &Path) -> anyhow::Result<Trust> {
        let shown = path.display();
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read the extra CA file {shown}: {e}"))?;
        let extra = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                anyhow::anyhow!("the extra CA file {shown} is not PEM certificates: {e:?}")
            })?;
        if extra.is_empty() {
            anyhow::bail!(
                "the extra CA file {shown} holds no certificate (a PEM file of `-----BEGIN CERTIFICATE-----` blocks is expected)"
            );
        }
        let config =
            client_config(&extra).map_err(|e| anyhow::anyhow!("the extra CA file {shown}: {e}"))?;
        Ok(Trust {
            extra: Arc::new(extra),
            source: Some(path.to_path_buf()),
            config,
        })
    }

    /// The rustls client configuration: every connection of the host's
    /// HTTPS clients uses it.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    /// The file the operator's extra roots came from, if any.
    pub fn extra_ca(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// How many roots the operator added.
    pub fn extra_roots(&self) -> usize {
        self.extra.len()
    }
}

/// A client configuration trusting Mozilla's roots and `extra`.
fn client_config(extra: &[CertificateDer<'static>]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    for (i, cert) in extra.iter().enumerate() {
        roots
            .add(cert.clone())
            .map_err(|e| format!("certificate {} cannot be a trusted root: {e}", i + 1))?;
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
        .map_err(|e| format!("configuring TLS: {e}"))
}

/// When `error` (or one of its causes) is a refused certificate, a
/// sentence naming the cause and what to do about it: a certificate for
/// another name, one no trusted root issued, one expired.
pub fn explain(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let e = find_rustls(error)?;
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(cert) = e else {
        return Some(format!("the TLS handshake failed: {e}"));
    };
    Some(match cert {
        C::NotValidForName | C::NotValidForNameContext { .. } => format!(
            "its TLS certificate is for another name ({cert}): the certificate must name the host called"
        ),
        C::UnknownIssuer => "its TLS certificate is not issued by a trusted certificate authority \
             (unknown issuer): a private CA is trusted only when the operator adds it with --extra-ca FILE"
            .to_string(),
        C::Expired | C::ExpiredContext { .. } => format!("its TLS certificate has expired ({cert})"),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            format!("its TLS certificate is not valid yet ({cert})")
        }
        other => format!("its TLS certificate was refused: {other}"),
    })
}

/// The rustls error in `error`'s chain, looking inside `io::Error`s (whose
/// `source` skips the error they wrap).
fn find_rustls<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(found) = find_rustls(inner) {
                return Some(found);
            }
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extra_ca_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Trust::with_extra_ca(&empty).unwrap_err().to_string();
        assert!(
            e.contains("empty.pem") && e.contains("no certificate"),
            "{e}"
        );
        let missing = dir.path().join("missing.pem");
        let e = Trust::with_extra_ca(&missing).unwrap_err().to_string();
        assert!(
            e.contains("missing.pem") && e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn certificate_errors_are_found_inside_io_errors() {
        let e = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        let said = explain(&e).unwrap();
        assert!(
            said.contains("unknown issuer") && said.contains("--extra-ca"),
            "{said}"
        );
        assert_eq!(explain(&std::io::Error::other("refused")), None);
    }
}
