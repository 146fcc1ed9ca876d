//! The embedding example provisions a real add-on through the library API.

use std::path::Path;
use std::process::Command;

#[test]
fn embedding_example_provisions_kv_and_prints_its_url() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    assert!(
        root.join("plugins/kv/kv.wasm").is_file(),
        "build the example add-ons first: addonhost plugins:build (tests/run.sh does)"
    );
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_embed"))
        .arg(data.path())
        .arg(root.join("plugins"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("(provisioned)"), "{stdout}");
    assert!(stdout.contains("KV_URL=http://kv-"), "{stdout}");
}
