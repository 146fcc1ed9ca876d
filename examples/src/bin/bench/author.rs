//! Edit to live, per language: an add-on as `plugins:new` writes it, served
//! by `addonhost serve`, with `addonhost plugins:dev` running beside it; a
//! one-line change to its 404 text is saved (renamed into place, as editors
//! do) and timed until the server answers with the new text. The baseline
//! is the same edit through a production build (`plugins:build`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::platform::{addonhost_bin, Conn, Server};
use crate::{ms, ratio, row, Row};

/// (language, scaffold name, source file, the 404 line as scaffolded, target).
const LANGUAGES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "rust",
        "edit-rust",
        "src/lib.rs",
        "\"not found\\n\"",
        "≤ 1.0 s",
    ),
    (
        "python",
        "edit-python",
        "app.py",
        "\"not found\\n\"",
        "≤ 1.5 s",
    ),
    ("js", "edit-js", "index.js", "'not found\\n'", "≤ 1.5 s"),
];

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Saves `text` to `path` as editors do: a new file renamed into place.
fn save(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("bench-save");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Time from now until the add-on's 404 page says `marker`.
fn until_live(
    server: &Server,
    id: &str,
    marker: &str,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let path = format!("/addons/{id}/no/such/page");
    loop {
        if let Ok((_, body)) = Conn::connect(&server.addr).and_then(|mut c| c.get(&path, &[])) {
            if String::from_utf8_lossy(&body).contains(marker) {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > limit {
            bail!("{id}: the server did not answer with {marker:?} within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn rows(quick: bool, tmp: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let edits = if quick { 3 } else { 10 };
    for (lang, id, file, line, target) in LANGUAGES {
        eprintln!("bench: edit → live, {lang} ({edits} edits with plugins:dev running)");
        let root = tmp.join(format!("author-{lang}"));
        let plugins = root.join("plugins");
        std::fs::create_dir_all(&plugins)?;
        let bin = addonhost_bin();
        // Rust scaffolds share one target dir, so their dependencies build once.
        let target_dir = std::env::current_dir()?.join("plugins/target");
        let run = |args: &[&str]| -> anyhow::Result<()> {
            let out = Command::new(&bin)
                .args(args)
                .env("CARGO_TARGET_DIR", &target_dir)
                .output()
                .with_context(|| format!("running addonhost {args:?}"))?;
            if !out.status.success() {
                bail!(
                    "addonhost {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        };
        run(&[
            "plugins:new",
            id,
            "--lang",
            lang,
            "--dir",
            plugins.to_str().unwrap(),
        ])?;
        let dir = plugins.join(id);
        let source = dir.join(file);
        let original = std::fs::read_to_string(&source)?;
        anyhow::ensure!(original.contains(line), "{file} lacks {line}");
        let edited = |n: usize| {
            original.replacen(
                line,
                &line.replace("not found", &format!("not found v{n}")),
                1,
            )
        };

        // The baseline: one edit through a production build.
        run(&["plugins:build", dir.to_str().unwrap()])?;
        let server = Server::start(&root.join("data"), plugins.to_str().unwrap())?;
        until_live(&server, id, "not found", Duration::from_secs(120))?;
        save(&source, &edited(0))?;
        let t0 = Instant::now();
        run(&["plugins:build", dir.to_str().unwrap()])?;
        until_live(&server, id, "not found v0", Duration::from_secs(300))?;
        let production = t0.elapsed();

        // plugins:dev running: its first build (a dev loader, dependencies)
        // is not timed; every save after it is.
        let mut dev = Killed(
            Command::new(&bin)
                .args(["plugins:dev", dir.to_str().unwrap()])
                .env("CARGO_TARGET_DIR", &target_dir)
                .env("ADDONHOST_DATA", root.join("data"))
                .env("ADDONHOST_URL", format!("http://{}", server.addr))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?,
        );
        let stderr = dev.0.stderr.take().context("plugins:dev's stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let first = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_secs(600)) {
                Ok(l) if l.starts_with("✓") => break,
                Ok(l) if l.starts_with("✗") => {
                    bail!("{id}: plugins:dev's first build failed: {l}")
                }
                Ok(_) => {}
                Err(_) => bail!("{id}: plugins:dev's first build did not finish"),
            }
        }
        until_live(&server, id, "not found v0", Duration::from_secs(120))?;
        // A Python or JavaScript dev build runs a loader the server compiles
        // (quick tier first, then optimized and cached) once ever: the rows
        // measure the saves after that.
        if *lang != "rust" {
            let started = Instant::now();
            loop {
                let (_, body) = Conn::connect(&server.addr)?
                    .get("/api/plugins", &[("authorization", &server.auth())])?;
                let plugins: serde_json::Value = serde_json::from_slice(&body)?;
                if plugins[0]["origin"].as_str().is_some_and(|o| o != "quick") {
                    break;
                }
                if started.elapsed() > Duration::from_secs(900) {
                    bail!("{id}: the dev loader was not compiled within 15 minutes");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        eprintln!(
            "bench:   first dev build, loader compiled, in {:.1} s",
            first.elapsed().as_secs_f64()
        );
        let mut times = Vec::new();
        for n in 1..=edits {
            // Settle: the previous save's build and reload are done.
            std::thread::sleep(Duration::from_millis(300));
            while rx.try_recv().is_ok() {}
            save(&source, &edited(n))?;
            times.push(until_live(
                &server,
                id,
                &format!("not found v{n}"),
                Duration::from_secs(120),
            )?);
        }
        drop(dev);
        drop(server);
        let m = median(times.clone());
        let max = times.iter().max().copied().unwrap_or_default();
        rows.push(row(
            format!("edit → live, {lang} (plugins:dev), median of {edits}"),
            format!("{} (max {})", ms(m), ms(max)),
            format!("{:.1} s plugins:build", production.as_secs_f64()),
            ratio(m.as_secs_f64(), production.as_secs_f64()),
            target,
        ));
    }
    Ok(())
}
