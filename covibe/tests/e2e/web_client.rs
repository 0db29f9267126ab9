//! The web client: its own unit tests (Vitest), and the browser suites (`web/e2e/run.mjs` and
//! `approvals.mjs`: Debian's Chromium driven by playwright-core) against a real `covibe
//! standalone` serving the client built into this binary, with the fake agent. Screenshots land
//! in `web/e2e/out/`.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::Stack;

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web")
}

fn report(what: &str, output: &Output) -> String {
    format!(
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn web_client_unit_tests_pass() {
    let output = tokio::process::Command::new("npm")
        .args(["test", "--silent"])
        .current_dir(web_dir())
        .output()
        .await
        .expect("npm (Node 20) is needed to test the web client");
    assert!(output.status.success(), "{}", report("npm test", &output));
}

#[tokio::test]
async fn web_client_works_in_a_browser() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "the browser suite drives Debian's Chromium: apt-get install chromium (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let remote_dir = remote.path().display().to_string();
    let stack = Stack::standalone(dir.path(), &[("COVIBE_SSH__REMOTE_DIR", &remote_dir)]).await;
    // An SSH VM the client registers through the Team screen.
    let sshd = covibe_testkit::SshServer::start().await;
    let ssh = serde_json::json!({
        "host": "127.0.0.1",
        "port": sshd.port,
        "username": sshd.user,
        "privateKey": sshd.client_key,
    });
    // A real repository and app for the preview the suite configures and deploys.
    let origin = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let commit = preview_repository(origin.path());
    let preview = serde_json::json!({
        "repository": origin.path().join("site.git"),
        "commit": commit,
        "port": covibe_testkit::free_port(),
        "workDir": work.path(),
    });
    let _stop = crate::preview_deploy::StopApp(work.path().join("app.pid"));
    let out = web_dir().join("e2e/out");
    let output = tokio::process::Command::new("node")
        .arg("e2e/run.mjs")
        .arg("--base")
        .arg(&stack.gw)
        .arg("--out")
        .arg(&out)
        .env("COVIBE_E2E_SSH", ssh.to_string())
        .env("COVIBE_E2E_PREVIEW", preview.to_string())
        .current_dir(web_dir())
        .output()
        .await
        .expect("node runs the browser suite");
    assert!(
        output.status.success(),
        "{}",
        report("the browser suite", &output)
    );
}

/// Tool approval in the browser (`web/e2e/approvals.mjs`, which starts its own `covibe
/// standalone` with the fake agent speaking Claude Code's control protocol): the owner sees the
/// request as a card on the agent and on the Command Deck, allows, and the output goes on; a
/// teammate sees that the agent waits, and no buttons.
#[tokio::test]
async fn tool_approvals_work_in_a_browser() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "the browser suite drives Debian's Chromium: apt-get install chromium (.ci/run does)"
    );
    let output = tokio::process::Command::new("node")
        .arg("e2e/approvals.mjs")
        .arg("--covibe")
        .arg(crate::support::COVIBE)
        .arg("--out")
        .arg(web_dir().join("e2e/out"))
        .current_dir(web_dir())
        .output()
        .await
        .expect("node runs the browser suite");
    assert!(
        output.status.success(),
        "{}",
        report("the approvals browser suite", &output)
    );
}

/// A bare repository under `dir` (`site.git`) whose `main` holds one page; its commit.
fn preview_repository(dir: &Path) -> String {
    let git = |cwd: &Path, args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(cwd)
            .env("GIT_AUTHOR_NAME", "Sarah")
            .env("GIT_AUTHOR_EMAIL", "sarah@example.com")
            .env("GIT_COMMITTER_NAME", "Sarah")
            .env("GIT_COMMITTER_EMAIL", "sarah@example.com")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(
        dir,
        &[
            "init",
            "--quiet",
            "--bare",
            "--initial-branch=main",
            "site.git",
        ],
    );
    git(&work, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(work.join("index.html"), "<h1>Hello from the preview</h1>").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "--quiet", "-m", "the page"]);
    let origin = dir.join("site.git").display().to_string();
    git(&work, &["push", "--quiet", &origin, "main"]);
    git(&work, &["rev-parse", "HEAD"])
}
