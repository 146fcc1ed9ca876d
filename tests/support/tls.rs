//! TLS for the tests, as an operator has it: a certificate authority made
//! by the test (openssl, as tests/postgres.sh makes PostgreSQL's), a
//! TLS-terminating proxy in front of `addonhost serve` on 127.0.0.1, and an
//! HTTPS client that trusts the test CA (a browser would). The proxy and
//! the client speak rustls; the host's own client is what is under test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::http;

/// Two certificate authorities in a temporary folder: `ca` (the one the
/// operator trusts with `--extra-ca`) and `other-ca` (nobody does).
pub struct TestCa {
    pub dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        for ca in ["ca", "other-ca"] {
            openssl(
                dir.path(),
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=addonhost test {ca}"),
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                ],
            );
        }
        TestCa { dir }
    }

    /// The trusted CA's certificate (what `--extra-ca` names).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for `names` (DNS names, or `IP:` addresses)
    /// issued by `issuer` (`ca` or `other-ca`): (certificate, key) files.
    pub fn leaf(&self, file: &str, names: &[&str], issuer: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.path();
        let (key, csr, cert, ext) = (
            format!("{file}.key"),
            format!("{file}.csr"),
            format!("{file}.pem"),
            format!("{file}.ext"),
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={}", names[0].trim_start_matches("IP:")),
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        );
        let sans: Vec<String> = names
            .iter()
            .map(|n| match n.starts_with("IP:") {
                true => n.to_string(),
                false => format!("DNS:{n}"),
            })
            .collect();
        std::fs::write(
            d.join(&ext),
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\n",
                sans.join(",")
            ),
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &format!("{issuer}.pem"),
                "-CAkey",
                &format!("{issuer}.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
        );
        (d.join(cert), d.join(key))
    }

    /// A client configuration trusting this test's `ca` only.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.ca()).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    }

    /// One HTTPS request to `name`:`port` (connecting to 127.0.0.1, as
    /// `name` resolves here), trusting the test CA.
    pub fn request(
        &self,
        name: &str,
        port: u16,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> http::Response {
        let conn = rustls::ClientConnection::new(
            self.client_config(),
            ServerName::try_from(name.to_string()).unwrap(),
        )
        .unwrap();
        let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let tls = rustls::StreamOwned::new(conn, tcp);
        http::exchange(tls, &format!("{name}:{port}"), method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} https://{name}:{port}{path}: {e}"))
    }
}

/// A TLS-terminating proxy on a free port of 127.0.0.1, as an operator puts
/// one in front of `serve --url https://…`: it presents the certificate
/// given and passes the bytes as they come to the server on
/// 127.0.0.1:`upstream` (set once the server is up). Stopped when dropped.
pub struct TlsProxy {
    pub port: u16,
    upstream: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
}

impl TlsProxy {
    pub fn start(cert: &Path, key: &Path) -> TlsProxy {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = Arc::new(AtomicU16::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (up, stopped) = (upstream.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    if stopped.load(Ordering::Relaxed) {
                        break;
                    }
                    let (acceptor, port) = (acceptor.clone(), up.load(Ordering::Relaxed));
                    tokio::spawn(async move {
                        // A handshake the client refuses ends here.
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let Ok(mut server) =
                            tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                        else {
                            return;
                        };
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(120),
                            tokio::io::copy_bidirectional(&mut tls, &mut server),
                        )
                        .await;
                    });
                }
            });
        });
        TlsProxy {
            port,
            upstream,
            stop,
        }
    }

    /// Passes what it receives to the server on 127.0.0.1:`port`.
    pub fn forward_to(&self, port: u16) {
        self.upstream.store(port, Ordering::Relaxed);
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}
