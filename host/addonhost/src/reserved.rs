//! Environment names no add-on may set.
//!
//! An app's config vars become its processes' environment (`addonhost run`,
//! `addonhost local`), and some names there are instructions to the loader,
//! the shell or a language runtime rather than data: `LD_PRELOAD` loads code
//! into every process, `NODE_OPTIONS=--require …` and `PYTHONSTARTUP` run
//! code, `HTTPS_PROXY` reroutes every request, `PATH` picks which program
//! runs. An add-on's prefix is its own choice, so without this list a partner
//! could name its vars into any of them. The user may still set them: it is
//! their processes.

/// Exact names.
const NAMES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "PWD",
    "OLDPWD",
    "TMPDIR",
    "TMP",
    "TEMP",
    "IFS",
    "PS4",
    "ENV",
    "BASH_ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PROMPT_COMMAND",
    "CDPATH",
    "GLOBIGNORE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "GCONV_PATH",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "RES_OPTIONS",
    "LOCALDOMAIN",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "CLASSPATH",
    "PORT",
    "DYNO",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
];

/// Prefixes: whole families of loader, runtime and tool settings.
const PREFIXES: &[&str] = &[
    "LD_",         // the dynamic loader: LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT
    "DYLD_",       // the macOS loader
    "MALLOC_",     // glibc's allocator
    "GLIBC_",      // GLIBC_TUNABLES
    "LC_",         // locales
    "PYTHON",      // PYTHONPATH, PYTHONSTARTUP, PYTHONHOME, PYTHONWARNINGS, …
    "NODE_",       // NODE_OPTIONS, NODE_PATH, NODE_EXTRA_CA_CERTS, …
    "NPM_CONFIG_", // npm
    "RUBY",        // RUBYOPT, RUBYLIB, RUBY_GC_…
    "GEM_",        // GEM_HOME, GEM_PATH
    "BUNDLE_",     // Bundler
    "PERL",        // PERL5OPT, PERL5LIB, PERL5DB, PERLLIB
    "JAVA_",       // JAVA_TOOL_OPTIONS, JAVA_HOME
    "_JAVA_",      // _JAVA_OPTIONS
    "JDK_JAVA_",   // JDK_JAVA_OPTIONS
    "GIT_",        // GIT_SSH_COMMAND, GIT_EXEC_PATH, GIT_CONFIG_…
    "SSH_",        // SSH_AUTH_SOCK, SSH_ASKPASS
    "ADDONHOST_",  // addonhost's own settings
];

/// Why `name` is reserved, or `None` if an add-on may set it.
pub fn reason(name: &str) -> Option<String> {
    if NAMES.contains(&name) {
        return Some(format!(
            "{name:?} is a reserved name (it configures the shell, the loader or a language runtime of the app's processes)"
        ));
    }
    PREFIXES.iter().find(|p| name.starts_with(**p)).map(|p| {
        format!(
            "{name:?} is reserved: names starting with {p:?} configure the loader, a language runtime or a tool of the app's processes"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_takeover_names_are_reserved_and_ordinary_ones_are_not() {
        for name in [
            "LD_PRELOAD",
            "PATH",
            "HTTPS_PROXY",
            "NODE_OPTIONS",
            "PYTHONSTARTUP",
            "PYTHONPATH",
            "BASH_ENV",
            "ENV",
            "GIT_SSH_COMMAND",
            "PERL5OPT",
            "RUBYOPT",
            "JAVA_TOOL_OPTIONS",
            "_JAVA_OPTIONS",
            "ADDONHOST_DATA",
        ] {
            assert!(reason(name).is_some(), "{name} should be reserved");
        }
        for name in [
            "KV_URL",
            "DATABASE_URL",
            "REDIS_URL",
            "HEROKU_POSTGRESQL_ORANGE_URL",
            "LDAP_URL",
        ] {
            assert_eq!(reason(name), None, "{name} should be allowed");
        }
    }
}
