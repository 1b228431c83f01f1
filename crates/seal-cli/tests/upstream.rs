//! Compatibility with the real upstream `kubeseal` (built by `scripts/fixtures`): values sealed by
//! either tool are recovered by the other.

mod util;

use std::path::Path;

use util::*;

const SCOPES: [&str; 3] = ["strict", "namespace-wide", "cluster-wide"];

/// `--recovery-unseal` with the test key, for either tool.
const RECOVER: &str = "--recovery-unseal --recovery-private-key key.pem";

/// A raw value sealed strictly for `ns/app`, for either tool.
const RAW_APP: &str = "--cert cert.pem --raw --name app -n ns";

/// The keyseal binary under test, beside upstream's kubeseal in loops over both.
fn keyseal() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keyseal"))
}

#[test]
fn kubeseal_seals_and_keyseal_recovers() {
    let env = Env::new();
    let kubeseal = fixture("kubeseal");
    env.write(
        "s.yaml",
        &secret(
            "app",
            Some("ns"),
            &[("password", "hunter2"), ("token", "t0k")],
        ),
    );
    for scope in SCOPES {
        let sealed = env
            .run_program_line(
                &kubeseal,
                &format!("--cert cert.pem -f s.yaml --scope {scope}"),
                "",
            )
            .ok()
            .stdout;
        let secret = env
            .run_line(&format!("{RECOVER} -o yaml"), &sealed)
            .ok()
            .one_secret();
        let data = secret.data.unwrap();
        assert_eq!(data["password"].0, b"hunter2", "{scope}");
        assert_eq!(data["token"].0, b"t0k", "{scope}");
    }
    let raw = env
        .run_program_line(&kubeseal, RAW_APP, "raw value")
        .ok()
        .stdout;
    assert_eq!(open_value(&raw, "ns/app").as_deref(), Some("raw value"));
}

#[test]
fn keyseal_seals_and_kubeseal_recovers() {
    let env = Env::new();
    let kubeseal = fixture("kubeseal");
    env.write(
        "s.yaml",
        &secret("app", Some("ns"), &[("password", "hunter2")]),
    );
    for scope in SCOPES {
        env.run_line(
            &format!("--cert cert.pem -f s.yaml --scope {scope} -w sealed.json"),
            "",
        )
        .ok();
        let secret = env
            .run_program_line(&kubeseal, &format!("{RECOVER} -f sealed.json"), "")
            .ok()
            .one_secret();
        assert_eq!(secret.data.unwrap()["password"].0, b"hunter2", "{scope}");
    }
    // A raw value too, checked by merging it into a SealedSecret kubeseal then opens.
    let raw = env
        .run_line(
            "--cert cert.pem --raw --scope namespace-wide -n ns",
            "merged",
        )
        .ok()
        .stdout;
    let mut ss: serde_json::Value = serde_json::from_str(&env.read("sealed.json")).unwrap();
    ss["metadata"]["annotations"] =
        serde_json::json!({"sealedsecrets.bitnami.com/namespace-wide": "true"});
    ss["spec"]["encryptedData"] = serde_json::json!({"raw": raw});
    env.write("raw.json", &ss.to_string());
    let secret = env
        .run_program_line(&kubeseal, &format!("{RECOVER} -f raw.json"), "")
        .ok()
        .one_secret();
    assert_eq!(secret.data.unwrap()["raw"].0, b"merged");
}

#[test]
fn both_tools_give_the_same_expired_certificate_error() {
    let env = Env::new();
    let kubeseal = fixture("kubeseal");
    env.write("expired.pem", &expired_cert_pem());
    env.write("s.yaml", &secret("app", Some("ns"), &[("k", "v")]));
    let args = args("--cert expired.pem -f s.yaml");
    let theirs = env.run_program(&kubeseal, &args, "");
    let ours = env.run(&args, "");
    assert_eq!((theirs.code, ours.code), (1, 1));
    let first = |s: &str| s.lines().next().unwrap_or("").to_owned();
    assert_eq!(
        first(&ours.stderr),
        first(&theirs.stderr),
        "same first line"
    );
}

/// The first line of stderr.
fn first_line(stderr: &str) -> &str {
    stderr.lines().next().unwrap_or("")
}

/// Upstream's integration suite appends `--kubeconfig` to flags that already carry one;
/// wrappers and CI templates append overrides the same way. kubeseal (pflag) takes the last
/// value; keyseal refused the repeated flag.
#[test]
fn regression_a_repeated_flag_takes_its_last_value_as_in_kubeseal() {
    let mut env = Env::new();
    let kubeseal = fixture("kubeseal");
    env.kubeconfig_with_namespace("from-context");
    env.write("s.yaml", &secret("app", None, &[("k", "v")]));
    env.write("other.pem", &expired_cert_pem());
    let args = args(
        "--cert other.pem --cert cert.pem -n first -n second \
         --kubeconfig /nonexistent/a --kubeconfig kubeconfig \
         --controller-name a --controller-name b -o json -o yaml -f s.yaml",
    );
    for program in [&kubeseal, keyseal()] {
        let run = env.run_program(program, &args, "").ok();
        assert!(
            run.stdout.starts_with("---") || run.stdout.starts_with("apiVersion"),
            "{program:?}: YAML, the last -o"
        );
        let sealed = run.one_sealed();
        assert_eq!(
            sealed.metadata.namespace.as_deref(),
            Some("second"),
            "{program:?}"
        );
        assert_eq!(
            open_value(&sealed.spec.encrypted_data["k"], "second/app").as_deref(),
            Some("v"),
            "{program:?}: sealed with the last --cert"
        );
    }
    // The last --kubeconfig is the one read: its context's namespace applies.
    let sealed = env
        .run_line(
            "--kubeconfig /nonexistent --kubeconfig kubeconfig --cert cert.pem -f s.yaml",
            "",
        )
        .ok()
        .one_sealed();
    assert_eq!(sealed.metadata.namespace.as_deref(), Some("from-context"));
    // A boolean flag given twice is accepted too.
    let raw = env
        .run_line("--cert cert.pem --raw --raw --name app -n ns", "v")
        .ok()
        .stdout;
    assert_eq!(open_value(&raw, "ns/app").as_deref(), Some("v"));
}

/// A key backup written by Go's `json.Marshal` of a client-go `SecretList` (what scripts and
/// operators that back up with client-go write, and upstream's integration suite does) has no
/// `kind` or `apiVersion`, on the list or its items. keyseal read it as one empty Secret.
#[test]
fn regression_recovery_unseal_reads_a_kindless_secret_list_as_kubeseal_does() {
    let env = Env::new();
    let kubeseal = fixture("kubeseal");
    env.seal_app();
    let (key, cert) = key();
    let b64 = keyseal_crypto::encode_base64;
    // The shape json.Marshal gives a SecretList from the API: TypeMeta empty and omitted.
    let backup = serde_json::json!({
        "metadata": {"resourceVersion": "1043"},
        "items": [{
            "metadata": {
                "name": "sealed-secrets-keyq7mzr",
                "generateName": "sealed-secrets-key",
                "namespace": "kube-system",
                "uid": "3d4f6c2a-0d6e-4c1b-9d0b-52c0e1a1b2c3",
                "resourceVersion": "1001",
                "creationTimestamp": "2026-12-03T10:00:00Z",
                "labels": {"sealedsecrets.bitnami.com/sealed-secrets-key": "active"},
                "managedFields": [{"manager": "controller", "operation": "Update", "apiVersion": "v1", "time": "2026-12-03T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {".": {}, "f:tls.crt": {}, "f:tls.key": {}}}}]
            },
            "data": {
                "tls.crt": b64(cert.to_pem().as_bytes()),
                "tls.key": b64(key.to_pkcs1_pem().as_bytes()),
            },
            "type": "kubernetes.io/tls"
        }]
    });
    env.write("keys.json", &backup.to_string());
    let args = args("--recovery-unseal --recovery-private-key keys.json -f sealed.json");
    for program in [&kubeseal, keyseal()] {
        let secret = env.run_program(program, &args, "").ok().one_secret();
        assert_eq!(
            secret.data.unwrap()["password"].0,
            b"hunter2",
            "{program:?}"
        );
    }
}

/// kubeseal goes on without `--recovery-private-key` and fails on the first item no key opens;
/// scripts match that text. keyseal refused up front with a message of its own.
#[test]
fn regression_recovery_unseal_without_keys_fails_as_kubeseal_does() {
    let env = Env::new();
    let kubeseal = fixture("kubeseal");
    env.seal_app();
    let args = args("--recovery-unseal --kubeconfig /nonexistent -f sealed.json");
    let theirs = env.run_program(&kubeseal, &args, "");
    let ours = env
        .run(&args, "")
        .fails_with("no key could decrypt secret (password)");
    assert_eq!(theirs.code, 1);
    for stderr in [&theirs.stderr, &ours.stderr] {
        let line = first_line(stderr);
        assert!(
            line.starts_with("error:") && line.ends_with("key could decrypt secret (password)"),
            "{line:?}"
        );
    }
    assert!(
        ours.stderr.contains("hint: no keys were given"),
        "{}",
        ours.stderr
    );
}

/// Scripts grep kubeseal's errors for the system's text (`no such file or directory`); keyseal
/// printed Rust's (`No such file or directory (os error 2)`).
#[test]
fn regression_system_errors_read_as_in_kubeseal() {
    let env = Env::new();
    let kubeseal = fixture("kubeseal");
    std::fs::create_dir(env.path("a-directory")).unwrap();
    for (args, text) in [
        (vec!["--cert", "/no/such/file"], "no such file or directory"),
        (vec!["--cert", "a-directory"], "is a directory"),
    ] {
        let theirs = env.run_program(&kubeseal, &args, "");
        let ours = env.run(&args, "").fails_with(text);
        for (who, stderr) in [("kubeseal", &theirs.stderr), ("keyseal", &ours.stderr)] {
            let line = first_line(stderr);
            assert!(
                line.starts_with("error:") && line.ends_with(text),
                "{who} {args:?}: {line:?}"
            );
        }
        assert!(!ours.stderr.contains("os error"), "{}", ours.stderr);
    }
    // kubeseal names no cause for an unreadable -f; keyseal gives the system's text all the same.
    for (file, text) in [
        ("/no/such/file", "no such file or directory"),
        ("a-directory", "is a directory"),
    ] {
        let run = env
            .run(&["--cert", "cert.pem", "-f", file], "")
            .fails_with(&format!(
                "cannot read {file} given with --secret-file: {text}"
            ));
        assert!(!run.stderr.contains("os error"), "{}", run.stderr);
    }
}

/// Upstream's `v<semver>` form, so tools that parse kubeseal's version line parse keyseal's
/// (`kubeseal version: v0.40.0` from upstream's Makefile builds); keyseal printed a bare `0.1.0`.
/// The binary's name stays keyseal's.
#[test]
fn regression_version_is_in_upstreams_v_form() {
    let line = Env::new().run(&["--version"], "").ok().stdout;
    let version = line
        .strip_prefix("keyseal version: v")
        .and_then(|v| v.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{line:?}"));
    assert!(
        version.split('.').count() == 3 && version.split('.').all(|n| n.parse::<u32>().is_ok()),
        "{line:?}"
    );
}
