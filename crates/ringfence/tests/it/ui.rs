//! The deployment hub in a real browser: `tests/ui/hub.mjs` drives Debian's headless Chromium
//! (playwright-core) against a server this test starts: sign in, a rollout watched live, a bad
//! release halted with its evidence, a rollback clicked, a viewer who cannot act, and axe-core
//! on the main pages. Chromium and the npm packages are installed by `cargo xtask deps`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::harness::{Server, Spec, path_str};

fn ui_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/ui");
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_in_a_real_browser() {
    let chromium = std::env::var("RF_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is not installed at {chromium}: apt-get install chromium (`cargo xtask deps` does this)"
    );
    assert!(
        ui_dir().join("node_modules/playwright-core").is_dir(),
        "the browser test's npm packages are missing: (cd tests/ui && npm ci) (`cargo xtask deps` does this)"
    );
    let server = Server::start().await;
    let w = "hub";
    let spec = Spec { phases: vec![(30, "3s"), (100, "2s")], ..Spec::new(w) };
    server.setup(&spec, &[("v1", &[]), ("v2", &[]), ("v3", &["SAMPLE_ERROR_RATE=0.5"])]).await;
    // A release with a flag, for the kill switch.
    let flags = server.path("flags.json");
    let doc = r#"{"flags": {"new-path": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}}}"#;
    std::fs::write(&flags, doc).unwrap();
    let out = server
        .cli(&["release", "create", w, "--version", "v4", "--artifact", "sample-app:v4", "--flags", path_str(&flags)])
        .await;
    assert_eq!(out.code, 0, "{out}");
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "{out}");
    let admin = server.token_with("alice", &["admin"]).await;
    let viewer = server.token_with("watcher", &["viewer"]).await;
    let router = server.router_addr(w).await;
    // Screenshots for the docs when asked (`RINGFENCE_UI_SHOTS=docs/ui`), else beside the test.
    let shots = std::env::var("RINGFENCE_UI_SHOTS")
        .map(|d| ui_dir().join("../..").join(d))
        .unwrap_or_else(|_| server.path("shots"));
    let out = tokio::process::Command::new("node")
        .arg(ui_dir().join("hub.mjs"))
        .current_dir(ui_dir())
        .env("RF_URL", server.url())
        .env("RF_TOKEN", &admin)
        .env("RF_ACTOR", "alice")
        .env("RF_VIEWER_TOKEN", &viewer)
        .env("RF_WORKLOAD", w)
        .env("RF_ROUTER", router.to_string())
        .env("RF_SHOTS", &shots)
        .env("RF_CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(300), out)
        .await
        .expect("the browser test finished within 5 minutes")
        .expect("node runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("hub: all passed"),
        "the browser test failed ({}):\n{stdout}\n{stderr}\n{}",
        out.status,
        server.diagnose(w).await
    );
}
