//! TLS to the database, through rustls (the stack the host's outbound HTTPS
//! uses), with libpq's meaning of each `sslmode`: `prefer` and `require`
//! encrypt without checking the certificate, `verify-ca` checks its chain
//! to the given roots, `verify-full` checks the chain and that it names the
//! host. And what went wrong, in words an operator can act on.

use std::sync::Arc;

use anyhow::Context;
use tokio_rustls::rustls::{
    self,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    client::WebPkiServerVerifier,
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    CertificateError, DigitallySignedStruct, SignatureScheme,
};

use super::conninfo::{Roots, Settings, SslMode, Tls};

/// The rustls configuration `tls` asks for; `None` for `sslmode=disable`.
pub fn client_config(tls: &Tls) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
    if tls.mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match tls.mode {
        SslMode::Disable => unreachable!(),
        SslMode::Prefer | SslMode::Require => Arc::new(Unchecked(provider.clone())),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = root_store(tls.roots.as_ref().context("no root certificates")?)?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .context("preparing the database's certificate check")?;
            if tls.mode == SslMode::VerifyCa {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions for the database")?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &tls.client {
        Some((cert, key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("reading sslcert {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading sslkey {}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .context("using sslcert and sslkey")?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}

fn root_store(roots: &Roots) -> anyhow::Result<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    match roots {
        Roots::System => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Roots::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("reading sslrootcert {}", path.display()))?;
            let (added, _) = store.add_parsable_certificates(certs);
            anyhow::ensure!(
                added > 0,
                "sslrootcert {} holds no certificate",
                path.display()
            );
        }
    }
    Ok(store)
}

/// `prefer` and `require`: encrypted, but any certificate is taken (the
/// handshake's signatures are still checked).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must reach a trusted root; the name it is for is
/// not checked. (WebPKI checks the chain before the name, so a name
/// mismatch means the chain was good.)
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Why a connection to the database failed, with what to do about it when
/// the cause is the connection's security.
pub fn explain(e: &tokio_postgres::Error, s: &Settings) -> String {
    let mode = s.tls.mode.as_str();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(t) = tls {
            let roots = match &s.tls.roots {
                Some(Roots::File(f)) => format!("sslrootcert {}", f.display()),
                Some(Roots::System) => "the system's roots (sslrootcert=system)".into(),
                None => "no roots".into(),
            };
            return match t {
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ) => format!(
                    "the database's TLS certificate is not valid for the host name connected to \
                     (sslmode={mode} checks the name; connect by a name the certificate lists): {t}"
                ),
                rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature,
                ) => format!(
                    "the database's TLS certificate is not signed by a CA in {roots} \
                     (sslmode={mode} checks the chain): {t}"
                ),
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. },
                ) => format!("the database's TLS certificate has expired: {t}"),
                other => format!("TLS with the database failed (sslmode={mode}): {other}"),
            };
        }
        source = err.source();
    }
    if let Some(db) = e.as_db_error() {
        // 28000: no pg_hba.conf rule lets this connection in.
        if db.code().code() == "28000" && db.message().contains("no encryption") {
            return format!(
                "the database refused a connection without TLS (its pg_hba.conf admits this client only over TLS; \
                 sslmode={mode} here): use sslmode=require or a verifying mode: {}",
                db.message()
            );
        }
        return db.message().to_string();
    }
    let text = e.to_string();
    if text.contains("TLS") && s.tls.mode != SslMode::Prefer {
        return format!("the database does not offer TLS, and sslmode={mode} requires it: {text}");
    }
    text
}
