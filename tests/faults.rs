//! The disk says no: a failed sync, a full disk. An answer the server gave
//! stays true, a failure is said clearly, and the store comes back intact.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;
use rusqlite::Connection;
use serde_json::json;

/// A shared object that makes `fsync`/`fdatasync` of any `*-wal` file fail
/// with EIO while the file named by `$FAULT_TRIGGER` exists, loaded into
/// the real server with `LD_PRELOAD`.
fn sync_fault_shim(dir: &Path) -> PathBuf {
    let src = dir.join("syncfault.c");
    std::fs::write(
        &src,
        r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failing(int fd) {
    const char *trigger = getenv("FAULT_TRIGGER");
    if (!trigger || access(trigger, F_OK) != 0) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 4) return 0;
    path[n] = 0;
    return strcmp(path + n - 4, "-wal") == 0;
}

int fdatasync(int fd) {
    if (failing(fd)) { errno = EIO; return -1; }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}

int fsync(int fd) {
    if (failing(fd)) { errno = EIO; return -1; }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}
"#,
    )
    .unwrap();
    let so = dir.join("syncfault.so");
    let out = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&so)
        .arg(&src)
        .arg("-ldl")
        .output()
        .expect("gcc builds the fault shim");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    so
}

fn provision(server: &Server, uuid: &str) -> support::http::Response {
    server.api(
        "POST",
        "/api/apps/shop/addons",
        Some(json!({"plan": "kv:mini", "uuid": uuid, "as": format!("K{}", &uuid[..8])})),
    )
}

fn uuid(i: u64) -> String {
    format!("{i:08x}-0000-4000-8000-000000000000")
}

/// The store is intact and holds every provisioning it acknowledged.
fn intact_with(data: &Path, acknowledged: &[String]) {
    let c = Connection::open(data.join("addonhost.db")).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    for u in acknowledged {
        let state: String = c
            .query_row("SELECT state FROM resources WHERE uuid = ?1", [u], |r| {
                r.get(0)
            })
            .unwrap_or_else(|e| panic!("acknowledged provisioning {u} is gone: {e}"));
        assert_eq!(state, "provisioned", "{u}");
    }
}

#[test]
fn a_failed_sync_stops_the_store_acknowledging_anything_until_restart() {
    let env = Env::new();
    let shim = sync_fault_shim(env.data());
    let trigger = env.data().join("fail-syncs-now");
    let mut command = env.command(&["serve", "--port", "0"]);
    command
        .env("LD_PRELOAD", &shim)
        .env("FAULT_TRIGGER", &trigger);
    let server = Server::start_with(command, &env);
    server.app_with("shop", &[]);
    let mut acknowledged = Vec::new();
    let r = provision(&server, &uuid(1));
    assert_eq!(r.status, 201, "{}", r.text());
    acknowledged.push(uuid(1));

    // The disk refuses a sync: that write is not acknowledged, and neither
    // is any later one, even once syncs work again — the kernel may have
    // dropped what the failed sync was to make durable.
    std::fs::write(&trigger, b"").unwrap();
    let r = provision(&server, &uuid(2));
    assert_eq!(r.status, 503, "{}", r.text());
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("could not make its writes durable"),
        "{message}"
    );
    std::fs::remove_file(&trigger).unwrap();
    for i in 3..6 {
        let r = provision(&server, &uuid(i));
        assert_eq!(
            r.status,
            503,
            "a write was acknowledged after a failed sync: {}",
            r.text()
        );
    }
    let r = server.api("PATCH", "/api/apps/shop/config", Some(json!({"X": "1"})));
    assert_eq!(r.status, 503, "{}", r.text());
    // Reads still answer.
    assert_eq!(server.api("GET", "/api/apps/shop", None).status, 200);
    assert!(server.stop().success());

    // Restarted (without the fault), the store works and holds everything
    // it acknowledged.
    intact_with(env.data(), &acknowledged);
    let server = Server::start(&env);
    let r = provision(&server, &uuid(7));
    assert_eq!(r.status, 201, "{}", r.text());
    acknowledged.push(uuid(7));
    assert!(server.stop().success());
    intact_with(env.data(), &acknowledged);
}

/// A tmpfs of `mib` MiB mounted on `at`, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, mib: u64) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill (it needs root or CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(at.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_writes_clearly_and_the_store_recovers_when_space_is_freed() {
    let env = Env::new();
    let disk = env.data().join("small-disk");
    let _mounted = SmallDisk::mount(&disk, 48);
    let data = disk.join("data");
    let mut command = env.command(&["serve", "--port", "0"]);
    command.env("ADDONHOST_DATA", &data);
    let server = Server::start_with(command, &env);
    server.app_with("shop", &[]);
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let r = provision(&server, &uuid(i));
        assert_eq!(r.status, 201, "{}", r.text());
        acknowledged.push(uuid(i));
    }
    // Fill what is left of the disk, then keep provisioning at full speed.
    let filler = disk.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 1 << 20];
        while f.write_all(&block).is_ok() {}
        let mut small = vec![0u8; 4096];
        while f.write_all(&small).is_ok() {}
        small.truncate(1);
        while f.write_all(&small).is_ok() {}
    }
    let mut full = 0;
    for i in 100..400 {
        let r = provision(&server, &uuid(i));
        match r.status {
            201 => acknowledged.push(uuid(i)),
            503 => {
                let message = r.json()["message"].as_str().unwrap().to_string();
                assert!(message.contains("is full"), "{message}");
                full += 1;
            }
            other => panic!("{other}: {}", r.text()),
        }
        if full >= 20 {
            break;
        }
    }
    assert!(full >= 20, "the disk never filled up");
    // Space is freed: the store works again, and lost nothing it answered.
    std::fs::remove_file(&filler).unwrap();
    let r = provision(&server, &uuid(999));
    assert_eq!(r.status, 201, "{}", r.text());
    acknowledged.push(uuid(999));
    assert!(server.stop().success());
    intact_with(&data, &acknowledged);
}
