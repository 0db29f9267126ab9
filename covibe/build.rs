//! Builds the web client (`web/`, with npm) and embeds it, so the one `covibe` binary serves the
//! app at `/`. `COVIBE_SKIP_WEB=1` skips it for builds that run services only (the gateway then
//! answers `/` with a pointer to the API).
//!
//! Cargo reruns this only when the client's sources, its lock file or the API document change.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the client is built from; `node_modules/`, `dist/` and generated files are not watched.
const SOURCES: &[&str] = &[
    "src",
    "public",
    "index.html",
    "package.json",
    "package-lock.json",
    "tsconfig.json",
    "vite.config.ts",
    "openapi.json",
    "scripts",
];

fn main() {
    println!("cargo:rerun-if-env-changed=COVIBE_SKIP_WEB");
    let out = PathBuf::from(env("OUT_DIR"));
    let table = out.join("web_assets.rs");
    if std::env::var_os("COVIBE_SKIP_WEB").is_some_and(|v| !v.is_empty() && v != "0") {
        println!("cargo:warning=COVIBE_SKIP_WEB is set: covibe is built without the web client");
        write_table(&table, &[]);
        return;
    }
    println!("cargo:rerun-if-env-changed=COVIBE_WEB_DIST");
    if let Some(dist) = std::env::var_os("COVIBE_WEB_DIST").filter(|v| !v.is_empty()) {
        // A client built elsewhere (the Dockerfile's Node stage): embed it as it is.
        let dist = PathBuf::from(dist);
        println!("cargo:rerun-if-changed={}", dist.display());
        embed(&dist, &table);
        return;
    }
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let web = manifest.join("../web");
    for source in SOURCES {
        println!("cargo:rerun-if-changed={}", web.join(source).display());
    }
    check_npm();
    let lock = web.join("package-lock.json");
    let installed = web.join("node_modules/.package-lock.json");
    if !installed.exists() || modified(&lock) > modified(&installed) {
        npm(&web, &["ci", "--no-audit", "--no-fund"]);
    }
    let dist = out.join("web-dist");
    let dist_arg = dist.display().to_string();
    npm(
        &web,
        &["run", "build", "--", "--outDir", &dist_arg, "--emptyOutDir"],
    );
    embed(&dist, &table);
}

fn embed(dist: &Path, table: &Path) {
    let mut files = Vec::new();
    collect(dist, dist, &mut files);
    files.sort();
    if !files.iter().any(|(name, _)| name == "index.html") {
        panic!(
            "the web client's build left no index.html in {}",
            dist.display()
        );
    }
    write_table(table, &files);
}

fn env(name: &str) -> std::ffi::OsString {
    std::env::var_os(name).unwrap_or_else(|| panic!("cargo sets {name} for build scripts"))
}

fn check_npm() {
    let found = Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        panic!(
            "\n\nBuilding covibe builds its web client, which needs Node.js 20 and npm.\n\
             Install them (Debian/Ubuntu: `apt-get install nodejs npm`), or build without the \
             client with COVIBE_SKIP_WEB=1 (services only: `/` then answers with a pointer to \
             the API).\n\n"
        );
    }
}

fn npm(web: &Path, args: &[&str]) {
    let status = Command::new("npm")
        .args(args)
        .current_dir(web)
        .status()
        .unwrap_or_else(|e| panic!("could not run npm {}: {e}", args.join(" ")));
    if !status.success() {
        panic!(
            "`npm {}` in {} failed ({status}); fix the web client, or set COVIBE_SKIP_WEB=1 to \
             build covibe without it",
            args.join(" "),
            web.display()
        );
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Every file under `dir` as (path relative to `root` with `/` separators, absolute path).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("could not read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("could not read {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            collect(root, &path, files);
        } else if let Ok(relative) = path.strip_prefix(root) {
            let name = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            files.push((name, path));
        }
    }
}

fn write_table(table: &Path, files: &[(String, PathBuf)]) {
    let mut code = String::from("/// The web client's files, built by `build.rs`.\n");
    code.push_str("pub static WEB_ASSETS: &[(&str, &[u8])] = &[\n");
    for (name, path) in files {
        let _ = writeln!(
            code,
            "    ({name:?}, include_bytes!({:?})),",
            path.display()
        );
    }
    code.push_str("];\n");
    std::fs::write(table, code)
        .unwrap_or_else(|e| panic!("could not write {}: {e}", table.display()));
}
