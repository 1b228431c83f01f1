//! Compatibility with the real upstream `kubeseal` (built by `scripts/fixtures`): values sealed by
//! either tool are recovered by the other.

mod util;

use util::*;

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
    for scope in ["strict", "namespace-wide", "cluster-wide"] {
        let sealed = env
            .run_program(
                &kubeseal,
                &["--cert", "cert.pem", "-f", "s.yaml", "--scope", scope],
                "",
            )
            .ok()
            .stdout;
        let run = env
            .run(
                &[
                    "--recovery-unseal",
                    "--recovery-private-key",
                    "key.pem",
                    "-o",
                    "yaml",
                ],
                &sealed,
            )
            .ok();
        let secret = keyseal_api::input::secrets(&run.stdout).unwrap().remove(0);
        let data = secret.data.unwrap();
        assert_eq!(data["password"].0, b"hunter2", "{scope}");
        assert_eq!(data["token"].0, b"t0k", "{scope}");
    }
    let raw = env
        .run_program(
            &kubeseal,
            &["--cert", "cert.pem", "--raw", "--name", "app", "-n", "ns"],
            "raw value",
        )
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
    for scope in ["strict", "namespace-wide", "cluster-wide"] {
        env.run(
            &[
                "--cert",
                "cert.pem",
                "-f",
                "s.yaml",
                "--scope",
                scope,
                "-w",
                "sealed.json",
            ],
            "",
        )
        .ok();
        let run = env
            .run_program(
                &kubeseal,
                &[
                    "--recovery-unseal",
                    "--recovery-private-key",
                    "key.pem",
                    "-f",
                    "sealed.json",
                ],
                "",
            )
            .ok();
        let secret = keyseal_api::input::secrets(&run.stdout).unwrap().remove(0);
        assert_eq!(secret.data.unwrap()["password"].0, b"hunter2", "{scope}");
    }
    // A raw value too, checked by merging it into a SealedSecret kubeseal then opens.
    let raw = env
        .run(
            &[
                "--cert",
                "cert.pem",
                "--raw",
                "--scope",
                "namespace-wide",
                "-n",
                "ns",
            ],
            "merged",
        )
        .ok()
        .stdout;
    let mut ss: serde_json::Value = serde_json::from_str(&env.read("sealed.json")).unwrap();
    ss["metadata"]["annotations"] =
        serde_json::json!({"sealedsecrets.bitnami.com/namespace-wide": "true"});
    ss["spec"]["encryptedData"] = serde_json::json!({"raw": raw});
    env.write("raw.json", &ss.to_string());
    let run = env
        .run_program(
            &kubeseal,
            &[
                "--recovery-unseal",
                "--recovery-private-key",
                "key.pem",
                "-f",
                "raw.json",
            ],
            "",
        )
        .ok();
    let secret = keyseal_api::input::secrets(&run.stdout).unwrap().remove(0);
    assert_eq!(secret.data.unwrap()["raw"].0, b"merged");
}

#[test]
fn both_tools_give_the_same_expired_certificate_error() {
    let env = Env::new();
    let kubeseal = fixture("kubeseal");
    env.write("expired.pem", &expired_cert_pem());
    env.write("s.yaml", &secret("app", Some("ns"), &[("k", "v")]));
    let theirs = env.run_program(&kubeseal, &["--cert", "expired.pem", "-f", "s.yaml"], "");
    let ours = env.run(&["--cert", "expired.pem", "-f", "s.yaml"], "");
    assert_eq!((theirs.code, ours.code), (1, 1));
    let first = |s: &str| s.lines().next().unwrap_or("").to_owned();
    assert_eq!(
        first(&ours.stderr),
        first(&theirs.stderr),
        "same first line"
    );
}
