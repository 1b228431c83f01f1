//! The official Azure SDK for Go against the test server: `sdk-go/main.go` (azidentity's
//! client-secret credential + azsecrets), built by `scripts/fixtures` as `kv-go-client`, walks the
//! secrets API end to end — set, versions, get, update, disabled, paging, backup, delete, 409,
//! recover, purge, restore. A second SDK with its own token flow (MSAL) and its own reading of
//! the wire format catches what agreeing with one SDK would hide.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;

/// The Go client, built (or found in the fixture cache) by `scripts/fixtures`.
fn go_client() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(root.join("scripts/fixtures"))
        .args(["path", "kv-go-client"])
        .output()
        .expect("running scripts/fixtures");
    assert!(
        out.status.success(),
        "scripts/fixtures path kv-go-client: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Runs the Go client as `who` against `kv`.
fn run_go_client(kv: &Emulator, who: &Who, secret: &str) -> Output {
    let ca = kv.data_dir().join("tls/ca.crt");
    Command::new(go_client())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KV_URL", &kv.url)
        .env("AZURE_AUTHORITY_HOST", &kv.url)
        .env("AZURE_TENANT_ID", TENANT)
        .env("AZURE_CLIENT_ID", who.client_id)
        .env("AZURE_CLIENT_SECRET", secret)
        // Go's crypto/x509 reads the trusted roots from here on Linux.
        .env("SSL_CERT_FILE", &ca)
        .output()
        .expect("running the Go client")
}

#[tokio::test]
async fn the_go_sdk_runs_the_whole_secrets_api() {
    // Two per page: the client's pager must follow `nextLink` across several pages.
    let kv = Emulator::start_with(|c| c["page_size"] = 2.into()).await;
    let out = run_go_client(&kv, &WRITER, WRITER.secret);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Go client failed: {}\n{stdout}{}\nemulator:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        kv.logs()
    );
    assert!(stdout.ends_with("done\n"), "{stdout}");
    // Every step ran, and the server saw the operations it names.
    let steps: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ok "))
        .collect();
    for step in [
        "set",
        "a new version",
        "get version",
        "update",
        "disabled version refused",
        "list pages",
        "list versions",
        "delete",
        "a deleted name is not reused",
        "recover",
        "purge",
        "restore",
    ] {
        assert!(steps.contains(&step), "step {step:?} missing:\n{stdout}");
    }
    let counts = kv.requests().await;
    for op in ["token", "set", "list", "backup", "restore", "purge"] {
        assert!(
            counts.get(op).and_then(|v| v.as_u64()).unwrap_or(0) > 0,
            "no {op} request counted: {counts}"
        );
    }
}

#[tokio::test]
async fn the_go_sdk_reports_the_token_endpoints_refusal() {
    let kv = Emulator::start().await;
    let out = run_go_client(&kv, &WRITER, "not-the-secret");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a wrong secret worked:\n{stdout}");
    // azidentity surfaces Entra's error code from the token endpoint's body.
    assert!(
        stdout.starts_with("FAIL set:") && stdout.contains("AADSTS7000215"),
        "{stdout}"
    );
}
