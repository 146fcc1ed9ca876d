//! Where the database is and how to reach it, as libpq reads it: a
//! `postgres://` URI or a `key=value` string, with the `PG*` environment
//! variables filling in what it leaves out, and libpq's TLS settings
//! (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`), which the driver's own
//! parser does not know beyond `disable`/`prefer`/`require`.
//!
//! Operators move between tools with one connection string; it must mean
//! here what it means to `psql`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it, no certificate check (libpq's default;
    /// `allow` is read as this too).
    Prefer,
    /// TLS or nothing, no certificate check (unless a root certificate is
    /// given: then as `VerifyCa`, as libpq does).
    Require,
    /// TLS with the server's certificate chained to a trusted root.
    VerifyCa,
    /// `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> anyhow::Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => bail!(
                "sslmode={other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            ),
        })
    }

    /// The name libpq gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Which roots a server certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The certificates in a PEM file (`sslrootcert=FILE`).
    File(PathBuf),
    /// The Mozilla roots outbound HTTPS uses (`sslrootcert=system`).
    System,
}

/// The TLS half of a connection's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// What `sslmode` asks, after libpq's rules (a root certificate turns
    /// `require` into `verify-ca`).
    pub mode: SslMode,
    /// Roots to check the server against, for the verifying modes.
    pub roots: Option<Roots>,
    /// A client certificate and its key (`sslcert`, `sslkey`), if the
    /// server asks for one.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// A database's connection settings.
#[derive(Clone)]
pub struct Settings {
    /// For the driver: hosts, port, user, password, database, options.
    pub config: tokio_postgres::Config,
    /// How the connection is secured.
    pub tls: Tls,
    /// The database as messages name it: `user@host:port/database`, never
    /// with the password.
    pub display: String,
}

/// The keys this module reads itself (the driver's parser refuses them or
/// some of their values).
const SSL_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Reads a connection string, with `env` (the process environment, in
/// production) filling in what it leaves out.
pub fn parse(url: &str, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Settings> {
    let (rest, ssl) = split_ssl(url)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
        anyhow::anyhow!(
            "the database URL is not a PostgreSQL connection string (postgres://user:password@host:port/database, \
             or host=… dbname=… as libpq takes it): {e}"
        )
    })?;
    let env = |k: &str| env(k).filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        match env("PGHOST") {
            Some(hosts) => {
                for h in hosts.split(',') {
                    if h.starts_with('/') {
                        config.host_path(h);
                    } else {
                        config.host(h);
                    }
                }
            }
            // libpq's default: the local socket directory (Debian's), or
            // the loopback over TCP.
            None if Path::new("/var/run/postgresql").is_dir() => {
                config.host_path("/var/run/postgresql");
            }
            None => {
                config.host("localhost");
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(port) = env("PGPORT") {
            for p in port.split(',') {
                config.port(
                    p.parse()
                        .with_context(|| format!("PGPORT={port:?} is not a port number"))?,
                );
            }
        }
    }
    if config.get_user().is_none() {
        match env("PGUSER")
            .or_else(|| env("USER"))
            .or_else(|| env("LOGNAME"))
        {
            Some(u) => {
                config.user(u);
            }
            None => {
                bail!("the database URL names no user: add one (postgres://USER@…) or set PGUSER")
            }
        }
    }
    if config.get_password().is_none() {
        if let Some(p) = env("PGPASSWORD") {
            config.password(p);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(d) = env("PGDATABASE") {
            config.dbname(d);
        }
    }
    if config.get_application_name().is_none() {
        config.application_name(env("PGAPPNAME").unwrap_or_else(|| "addonhost".into()));
    }
    if config.get_connect_timeout().is_none() {
        let secs = env("PGCONNECT_TIMEOUT")
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .unwrap_or(10);
        config.connect_timeout(std::time::Duration::from_secs(secs));
    }
    let get = |k: &str, pg: &str| {
        ssl.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .or_else(|| env(pg))
    };
    let explicit_mode = get("sslmode", "PGSSLMODE");
    let rootcert = get("sslrootcert", "PGSSLROOTCERT");
    let roots = match rootcert.as_deref() {
        Some("system") => Some(Roots::System),
        Some(file) => Some(Roots::File(PathBuf::from(file))),
        // libpq's default root file, if there is one.
        None => home_file(env("HOME"), "root.crt").map(Roots::File),
    };
    let mode = match explicit_mode.as_deref() {
        Some(m) => SslMode::parse(m)?,
        // `sslrootcert=system` asks for the full check unless told otherwise
        // (PostgreSQL 16's libpq).
        None if roots == Some(Roots::System) => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    let mode = match (mode, &roots) {
        (SslMode::Require, Some(_)) => SslMode::VerifyCa,
        (m, _) => m,
    };
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && roots.is_none() {
        bail!(
            "sslmode={} checks the database's certificate, but no root certificate is given: set \
             sslrootcert=FILE (or PGSSLROOTCERT) to the CA's certificate, sslrootcert=system for the \
             system's roots, or a weaker sslmode",
            mode.as_str()
        );
    }
    if let Some(Roots::File(f)) = &roots {
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && !f.is_file() {
            bail!(
                "sslrootcert {} does not exist (sslmode={} needs the CA's certificate there)",
                f.display(),
                mode.as_str()
            );
        }
    }
    let cert = get("sslcert", "PGSSLCERT")
        .map(PathBuf::from)
        .or_else(|| home_file(env("HOME"), "postgresql.crt"));
    let key = get("sslkey", "PGSSLKEY")
        .map(PathBuf::from)
        .or_else(|| home_file(env("HOME"), "postgresql.key"));
    let client = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        _ => None,
    };
    config.ssl_mode(match mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    let display = display(&config);
    Ok(Settings {
        config,
        tls: Tls {
            mode,
            roots,
            client,
        },
        display,
    })
}

/// `~/.postgresql/NAME`, if it exists.
fn home_file(home: Option<String>, name: &str) -> Option<PathBuf> {
    let p = Path::new(&home?).join(".postgresql").join(name);
    p.is_file().then_some(p)
}

/// `user@host:port/database`.
fn display(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or_default()
    )
}

/// The connection string without its TLS keys, and those keys (decoded).
fn split_ssl(url: &str) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let mut ssl = Vec::new();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), ssl));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(k)?;
            if SSL_KEYS.contains(&key.as_str()) {
                ssl.push((key, decode(v)?));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, ssl));
    }
    // key=value pairs, values optionally single-quoted with backslash
    // escapes.
    let mut kept = Vec::new();
    let mut s = url.trim_start();
    while !s.is_empty() {
        let eq = s.find('=').with_context(|| {
            format!("the connection string has a key without a value near {s:?}")
        })?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].trim_start();
        let mut value = String::new();
        if let Some(quoted) = s.strip_prefix('\'') {
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '\'' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.context("the connection string has an unterminated quoted value")?;
            s = &quoted[end..];
        } else {
            let end = s.find(char::is_whitespace).unwrap_or(s.len());
            value.push_str(&s[..end]);
            s = &s[end..];
        }
        s = s.trim_start();
        if SSL_KEYS.contains(&key.as_str()) {
            ssl.push((key, value));
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok((kept.join(" "), ssl))
}

fn decode(s: &str) -> anyhow::Result<String> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .with_context(|| format!("bad percent-encoding in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).with_context(|| format!("{s:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn a_url_keeps_what_it_says_and_the_environment_fills_the_rest() {
        let s = parse(
            "postgres://app@db.example:6432/?application_name=x",
            &env_of(&[
                ("PGPASSWORD", "s3cret"),
                ("PGDATABASE", "platform"),
                ("PGUSER", "other"),
                ("PGHOST", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(s.config.get_user(), Some("app"));
        assert_eq!(s.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(s.config.get_dbname(), Some("platform"));
        assert_eq!(s.config.get_ports(), &[6432]);
        assert_eq!(s.display, "app@db.example:6432/platform");
        assert!(!s.display.contains("s3cret"));
        assert_eq!(s.tls.mode, SslMode::Prefer);
    }

    #[test]
    fn postgres_with_three_slashes_takes_host_and_port_from_the_environment() {
        let s = parse(
            "postgres:///shop",
            &env_of(&[("PGHOST", "10.0.0.7"), ("PGPORT", "5433"), ("PGUSER", "u")]),
        )
        .unwrap();
        assert_eq!(s.display, "u@10.0.0.7:5433/shop");
    }

    #[test]
    fn libpq_tls_keys_are_read_from_the_url_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "x").unwrap();
        let url = format!(
            "postgres://u@h/d?sslmode=verify-full&sslrootcert={}",
            ca.display()
        );
        let s = parse(&url, &env_of(&[])).unwrap();
        assert_eq!(s.tls.mode, SslMode::VerifyFull);
        assert_eq!(s.tls.roots, Some(Roots::File(ca.clone())));
        let s = parse("host=h user=u sslmode=verify-ca", &|k: &str| {
            (k == "PGSSLROOTCERT").then(|| ca.display().to_string())
        })
        .unwrap();
        assert_eq!(s.tls.mode, SslMode::VerifyCa);
        // libpq: `require` with a root certificate checks the chain.
        let s = parse(
            &format!(
                "postgres://u@h/d?sslmode=require&sslrootcert={}",
                ca.display()
            ),
            &env_of(&[]),
        )
        .unwrap();
        assert_eq!(s.tls.mode, SslMode::VerifyCa);
        let s = parse("postgres://u@h/d?sslrootcert=system", &env_of(&[])).unwrap();
        assert_eq!(
            (s.tls.mode, s.tls.roots),
            (SslMode::VerifyFull, Some(Roots::System))
        );
        let s = parse("postgres://u@h/d", &env_of(&[("PGSSLMODE", "disable")])).unwrap();
        assert_eq!(s.tls.mode, SslMode::Disable);
    }

    #[test]
    fn a_verifying_sslmode_without_a_root_certificate_is_refused_naming_what_to_set() {
        let e = parse("postgres://u@h/d?sslmode=verify-full", &env_of(&[]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sslrootcert"), "{e}");
        let e = parse(
            "postgres://u@h/d?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
            &env_of(&[]),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("/nonexistent/ca.pem does not exist"), "{e}");
        let e = parse("postgres://u@h/d?sslmode=strict", &env_of(&[]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("\"strict\""), "{e}");
    }

    #[test]
    fn quoted_key_value_strings_survive_the_tls_keys_being_taken_out() {
        let s = parse(
            r"host=h user=u password='it\'s a secret' dbname=d sslmode=disable",
            &env_of(&[]),
        )
        .unwrap();
        assert_eq!(s.config.get_password(), Some(&b"it's a secret"[..]));
        assert_eq!(s.config.get_dbname(), Some("d"));
        assert_eq!(s.tls.mode, SslMode::Disable);
    }

    #[test]
    fn percent_encoded_values_are_decoded() {
        let s = parse(
            "postgres://u:p%40ss@h/d?sslrootcert=%2Ftmp%2Fca.pem&sslmode=prefer",
            &env_of(&[]),
        )
        .unwrap();
        assert_eq!(s.config.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(s.tls.roots, Some(Roots::File("/tmp/ca.pem".into())));
    }
}
