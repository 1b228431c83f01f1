//! `keyseal` driven as a user would: stdin/stdout, files, environment, exit codes.

mod util;

use util::*;

/// The input most tests seal: the Secret `ns/s` with `k: v`.
fn ns_s() -> String {
    secret("s", Some("ns"), &[("k", "v")])
}

#[test]
fn seals_stdin_to_pretty_json_that_opens_with_the_key() {
    let env = Env::new();
    let run = env
        .run_line(
            "--cert cert.pem",
            &secret(
                "db",
                Some("prod"),
                &[("password", "hunter2"), ("user", "admin")],
            ),
        )
        .ok();
    assert!(
        run.stdout.starts_with(
            "{\n  \"apiVersion\": \"bitnami.com/v1alpha1\",\n  \"kind\": \"SealedSecret\""
        ),
        "{}",
        run.stdout
    );
    assert!(run.stdout.ends_with("}\n"));
    assert!(!run.stdout.contains("hunter2"));
    let ss = &run.sealed()[0];
    assert_eq!(ss.metadata.name.as_deref(), Some("db"));
    assert_eq!(ss.metadata.namespace.as_deref(), Some("prod"));
    assert_eq!(
        open_item(ss, "password", "prod/db").as_deref(),
        Some("hunter2")
    );
    assert_eq!(open_item(ss, "user", "prod/db").as_deref(), Some("admin"));
    assert!(
        ss.spec.encrypted_data["password"].starts_with("Ag"),
        "RSA-4096 values start with Ag"
    );
}

#[test]
fn yaml_output_and_output_file_extension() {
    let env = Env::new();
    env.write("s.yaml", &secret("a", Some("ns"), &[("k", "v")]));
    let run = env.run_line("--cert cert.pem -f s.yaml -o yaml", "").ok();
    assert!(
        run.stdout
            .starts_with("---\napiVersion: bitnami.com/v1alpha1\nkind: SealedSecret\n"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains(">-"), "long values stay on one line");

    env.run_line("--cert cert.pem -f s.yaml -w out.yml", "")
        .ok();
    assert!(
        env.read("out.yml").starts_with("---\n"),
        "-w *.yml implies yaml"
    );
    env.run_line("--cert cert.pem -f s.yaml -w out.json", "")
        .ok();
    assert!(env.read("out.json").starts_with('{'));
    env.run_line("--cert cert.pem -f s.yaml --format yaml -w out.json", "")
        .ok();
    assert!(
        env.read("out.json").starts_with("---"),
        "-o yaml is honoured for other extensions"
    );
}

#[test]
fn multi_document_yaml_and_concatenated_json() {
    let env = Env::new();
    let docs = format!(
        "{}---\n{}",
        secret("a", Some("ns"), &[("k", "1")]),
        secret("b", Some("ns"), &[("k", "2")])
    );
    let all = env.run_line("--cert cert.pem", &docs).ok().sealed();
    assert_eq!(all.len(), 2);
    assert_eq!(open_item(&all[1], "k", "ns/b").as_deref(), Some("2"));

    let json = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"a","namespace":"ns"},"data":{"k":"MQ=="}}
{"apiVersion":"v1","kind":"Secret","metadata":{"name":"b","namespace":"ns"},"stringData":{"k":"2"},"data":{"k":"MQ=="}}"#;
    let all = env.run_line("--cert cert.pem -o yaml", json).ok().sealed();
    assert_eq!(all.len(), 2);
    assert_eq!(open_item(&all[0], "k", "ns/a").as_deref(), Some("1"));
    assert_eq!(
        open_item(&all[1], "k", "ns/b").as_deref(),
        Some("2"),
        "stringData wins"
    );
}

#[test]
fn scopes_from_flag_and_annotations() {
    let env = Env::new();
    for (scope, label, annotation) in [
        ("strict", "ns/s", None),
        (
            "namespace-wide",
            "ns",
            Some("sealedsecrets.bitnami.com/namespace-wide"),
        ),
        (
            "cluster-wide",
            "",
            Some("sealedsecrets.bitnami.com/cluster-wide"),
        ),
    ] {
        let ss = env
            .run(&["--cert", "cert.pem", "--scope", scope], &ns_s())
            .ok()
            .one_sealed();
        assert_eq!(open_item(&ss, "k", label).as_deref(), Some("v"), "{scope}");
        let top = ss.metadata.annotations.clone().unwrap_or_default();
        let template = ss
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .clone()
            .unwrap_or_default();
        match annotation {
            Some(a) => {
                assert_eq!(top[a], "true");
                assert_eq!(template[a], "true");
            }
            None => assert!(top.is_empty() && template.is_empty()),
        }
    }
    // The annotation on the input selects the scope; an explicit --scope strict removes it.
    let annotated = "kind: Secret\nmetadata:\n  name: s\n  namespace: ns\n  annotations: {sealedsecrets.bitnami.com/namespace-wide: \"true\"}\nstringData: {k: v}\n";
    let ss = env.run_line("--cert cert.pem", annotated).ok().one_sealed();
    assert_eq!(open_item(&ss, "k", "ns").as_deref(), Some("v"));
    let ss = env
        .run_line("--cert cert.pem --scope strict", annotated)
        .ok()
        .one_sealed();
    assert_eq!(open_item(&ss, "k", "ns/s").as_deref(), Some("v"));
    assert_eq!(ss.metadata.annotations, None);
    env.run_line("--cert cert.pem --scope wide", annotated)
        .fails_with("must be one of: strict, namespace-wide, cluster-wide");
}

#[test]
fn namespace_comes_from_input_then_flag_then_context_then_default() {
    let mut env = Env::new();
    let no_ns = secret("s", None, &[("k", "v")]);
    let ns_of = |env: &Env, line: &str, input: &str| {
        let ss = env.run_line(line, input).ok().one_sealed();
        ss.metadata.namespace.unwrap()
    };
    assert_eq!(ns_of(&env, "--cert cert.pem", &no_ns), "default");
    assert_eq!(ns_of(&env, "--cert cert.pem -n flagged", &no_ns), "flagged");
    env.kubeconfig_with_namespace("fromctx");
    assert_eq!(ns_of(&env, "--cert cert.pem", &no_ns), "fromctx");
    assert_eq!(
        ns_of(&env, "--cert cert.pem --namespace flagged", &no_ns),
        "flagged"
    );
    let with_ns = secret("s", Some("mine"), &[("k", "v")]);
    assert_eq!(ns_of(&env, "--cert cert.pem -n mine", &with_ns), "mine");
    env.run_line("--cert cert.pem -n other", &with_ns)
        .fails_with("the Secret's metadata.namespace is \"mine\" but --namespace is \"other\"");
    // Cluster-wide values can go anywhere, so no mismatch is reported.
    env.run_line("--cert cert.pem -n other --scope cluster-wide", &with_ns)
        .ok();
}

#[test]
fn raw_mode() {
    let mut env = Env::new();
    let run = env
        .run_line("--cert cert.pem --raw --name s -n ns", "the value")
        .ok();
    assert!(!run.stdout.ends_with('\n'), "raw output has no newline");
    assert_eq!(
        open_value(&run.stdout, "ns/s").as_deref(),
        Some("the value")
    );

    env.write("v.txt", "from a file");
    let run = env
        .run_line(
            "--cert cert.pem --raw --name s -n ns --from-file item=v.txt",
            "",
        )
        .ok();
    assert_eq!(
        open_value(&run.stdout, "ns/s").as_deref(),
        Some("from a file")
    );
    let run = env
        .run_line(
            "--cert cert.pem --raw --scope cluster-wide --from-file v.txt",
            "",
        )
        .ok();
    assert_eq!(open_value(&run.stdout, "").as_deref(), Some("from a file"));
    env.kubeconfig_with_namespace("ctx");
    let run = env
        .run_line("--cert cert.pem --raw --scope namespace-wide", "x")
        .ok();
    assert_eq!(
        open_value(&run.stdout, "ctx").as_deref(),
        Some("x"),
        "namespace from the kubeconfig context"
    );

    for (line, stdin, error) in [
        (
            "--cert cert.pem --raw -n ns",
            "x",
            "must provide the --name flag with --raw and --scope strict",
        ),
        (
            "--cert cert.pem --raw --name s --from-file v.txt,v.txt",
            "",
            "must provide only one --from-file",
        ),
        (
            "--cert cert.pem --from-file v.txt",
            "",
            "--from-file requires --raw",
        ),
        (
            "--cert cert.pem --raw --name s --from-file missing.txt",
            "",
            "cannot read missing.txt given with --from-file",
        ),
    ] {
        env.run_line(line, stdin).fails_with(error);
    }
}

#[test]
fn output_file_is_written_atomically_and_only_on_success() {
    let env = Env::new();
    env.write("out.yaml", "previous contents\n");
    env.run_line(
        "--cert cert.pem -w out.yaml",
        "kind: Secret\nmetadata: {name: s, namespace: ns}\n",
    )
    .fails_with("secret.data is empty");
    assert_eq!(
        env.read("out.yaml"),
        "previous contents\n",
        "a failed run leaves the file alone"
    );
    env.run_line("--cert cert.pem -w out.yaml", &ns_s()).ok();
    assert_eq!(sealed(&env.read("out.yaml")).len(), 1);
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".keyseal-"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files left behind");
    env.run_line("--cert cert.pem -w no/such/dir/out.yaml", &ns_s())
        .fails_with("cannot write no/such/dir/out.yaml");
}

#[test]
fn empty_data_needs_allow_empty_data() {
    let env = Env::new();
    let empty = "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: ns}\n";
    let run = env
        .run_line("--cert cert.pem", empty)
        .fails_with("stdin: document 1: secret.data is empty in input Secret");
    assert!(
        run.stderr
            .contains("hint: to seal a Secret without data, pass --allow-empty-data")
    );
    let ss = env
        .run_line("--cert cert.pem --allow-empty-data", empty)
        .ok()
        .one_sealed();
    assert!(ss.spec.encrypted_data.is_empty());
}

#[test]
fn merge_into_updates_the_file_in_place_keeping_existing_items() {
    let env = Env::new();
    env.write("s.yaml", &secret("app", Some("ns"), &[("a", "1")]));
    env.run_line("--cert cert.pem -f s.yaml -w sealed.yaml", "")
        .ok();
    let before = sealed(&env.read("sealed.yaml")).remove(0);
    // The merged Secret's own name/namespace are replaced by the file's.
    env.run_line(
        "--cert cert.pem --merge-into sealed.yaml",
        &secret("whatever", Some("ns"), &[("b", "2")]),
    )
    .ok();
    let text = env.read("sealed.yaml");
    assert!(text.starts_with("---\n"), "the file keeps its YAML format");
    let after = sealed(&text).remove(0);
    assert_eq!(
        after.spec.encrypted_data["a"], before.spec.encrypted_data["a"],
        "existing items untouched"
    );
    assert_eq!(open_item(&after, "b", "ns/app").as_deref(), Some("2"));
    env.run_line(
        "--cert cert.pem --merge-into missing.yaml",
        &secret("x", Some("ns"), &[("b", "2")]),
    )
    .fails_with("cannot read missing.yaml given with --merge-into");

    // A cluster-wide file gets cluster-wide items without repeating --scope.
    env.run_line(
        "--cert cert.pem --scope cluster-wide -f s.yaml -w cw.json",
        "",
    )
    .ok();
    env.run_line(
        "--cert cert.pem --merge-into cw.json",
        &secret("app", Some("ns"), &[("c", "3")]),
    )
    .ok();
    let cw = sealed(&env.read("cw.json")).remove(0);
    assert!(env.read("cw.json").starts_with('{'), "JSON file stays JSON");
    assert_eq!(open_item(&cw, "c", "").as_deref(), Some("3"));
}

/// The items merged into a file are sealed in `--scope`, else the input's annotated scope, else
/// the file's scope.
#[test]
fn merge_into_scope_comes_from_flag_then_input_then_file() {
    let env = Env::new();
    env.write("s.yaml", &secret("app", Some("ns"), &[("a", "1")]));
    env.run_line(
        "--cert cert.pem --scope cluster-wide -f s.yaml -w cw.json",
        "",
    )
    .ok();
    let namespace_wide = "kind: Secret\nmetadata:\n  name: x\n  annotations: {sealedsecrets.bitnami.com/namespace-wide: \"true\"}\nstringData: {b: \"2\"}\n";
    for (flags, input, (item, value), label) in [
        (
            "--scope strict",
            secret("x", None, &[("a", "1")]),
            ("a", "1"),
            "ns/app",
        ),
        ("", namespace_wide.to_owned(), ("b", "2"), "ns"),
        ("", secret("x", None, &[("c", "3")]), ("c", "3"), ""),
    ] {
        env.run_line(
            &format!("--cert cert.pem --merge-into cw.json {flags}"),
            &input,
        )
        .ok();
        let merged = sealed(&env.read("cw.json")).remove(0);
        assert_eq!(
            open_item(&merged, item, label).as_deref(),
            Some(value),
            "{flags:?}: item {item} opens with label {label:?}"
        );
    }
}

#[test]
fn recovery_unseal_with_pem_secret_and_list_backups() {
    let env = Env::new();
    env.seal_app();
    let (key, cert) = key();
    let key_secret = keyseal_api::key_secret::new_key_secret(
        "kube-system",
        "sealed-secrets-key",
        key,
        cert,
        &Default::default(),
        &Default::default(),
    );
    env.write("backup.yaml", &keyseal_api::to_yaml(&key_secret).unwrap());
    env.write(
        "backup-list.json",
        &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [key_secret]}).to_string(),
    );
    let other = keyseal_crypto::PrivateKey::generate(2048).unwrap();
    env.write("other.pem", other.to_pkcs1_pem().as_str());

    for keys in [
        "--recovery-private-key key.pem",
        "--recovery-private-key backup.yaml",
        "--recovery-private-key other.pem,backup-list.json",
        "--recovery-private-key other.pem --recovery-private-key key.pem",
    ] {
        let secret = env
            .run_line(&format!("--recovery-unseal -f sealed.json {keys}"), "")
            .ok()
            .one_secret();
        assert_eq!(
            secret.data.as_ref().unwrap()["password"].0,
            b"hunter2",
            "{keys:?}"
        );
        assert_eq!(secret.metadata.namespace.as_deref(), Some("ns"));
    }
    env.run_line(
        "--recovery-unseal --recovery-private-key key.pem -f sealed.json -w plain.yaml",
        "",
    )
    .ok();
    assert_eq!(env.mode("plain.yaml"), 0o600, "plaintext output is private");

    let no_key_opens = "sealed.json: SealedSecret ns/app: no key could decrypt secret (password)";
    let run = env
        .run_line(
            "--recovery-unseal --recovery-private-key other.pem -f sealed.json",
            "",
        )
        .fails_with(no_key_opens);
    assert!(
        run.stderr
            .contains("tried 1 key(s) with the strict label \"ns/app\""),
        "{}",
        run.stderr
    );
    for (line, error) in [
        ("--recovery-unseal -f sealed.json", no_key_opens),
        (
            "--recovery-unseal --recovery-private-key nope.pem -f sealed.json",
            "cannot read nope.pem given with --recovery-private-key",
        ),
        (
            "--recovery-unseal --recovery-private-key s.yaml -f sealed.json",
            "s.yaml: no private key found",
        ),
    ] {
        env.run_line(line, "").fails_with(error);
    }
}

/// Serves `body` for every request on a loopback port, `count` times.
fn serve(body: String, count: usize) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-pem-file\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn certificate_from_url_file_url_and_fetch_cert() {
    let env = Env::new();
    let pem = key().1.to_pem();
    let port = serve(pem.clone(), 2);
    let url = format!("http://127.0.0.1:{port}/v1/cert.pem");
    assert_eq!(
        env.run(&["--fetch-cert", "--cert", &url], "").ok().stdout,
        pem
    );
    let ss = env.run(&["--cert", &url], &ns_s()).ok().one_sealed();
    assert_eq!(open_item(&ss, "k", "ns/s").as_deref(), Some("v"));
    let file_url = format!("file://{}", env.path("cert.pem").display());
    env.run(&["--cert", &file_url], &ns_s()).ok();
    env.run_line("--cert http://127.0.0.1:9/cert.pem", &ns_s())
        .fails_with("cannot fetch certificate");
}

#[test]
fn environment_variables_set_flags() {
    let mut env = Env::new();
    env.set("SEALED_SECRETS_CERT", "cert.pem");
    env.set("SEALED_SECRETS_SCOPE", "namespace-wide");
    env.set("SEALED_SECRETS_FORMAT", "yaml");
    let run = env.run(&[], &ns_s()).ok();
    assert!(run.stdout.starts_with("---\n"));
    assert_eq!(
        open_item(&run.one_sealed(), "k", "ns").as_deref(),
        Some("v")
    );
    env.set("SEALED_SECRETS_ALLOW_EMPTY_DATA", "true");
    env.run(&[], "kind: Secret\nmetadata: {name: s, namespace: ns}\n")
        .ok();
}

#[test]
fn version_help_and_completions() {
    let env = Env::new();
    assert_eq!(
        env.run(&["--version"], "").ok().stdout,
        // Upstream's `v<semver>` form; the name stays keyseal's.
        format!("keyseal version: v{}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = env.run(&["--help"], "").ok().stdout;
    for flag in args(
        "--cert --fetch-cert --controller-name --controller-namespace --format --secret-file
         --sealed-secret-file --scope --raw --name --from-file --merge-into --re-encrypt
         --validate --recovery-unseal --recovery-private-key --allow-empty-data --kubeconfig
         --namespace --context",
    ) {
        assert!(help.contains(flag), "help lacks {flag}");
    }
    assert!(
        env.run_line("completion bash", "")
            .ok()
            .stdout
            .contains("keyseal")
    );
    env.run(&["--no-such-flag"], "")
        .fails_with("unexpected argument '--no-such-flag'");
}

#[test]
fn bad_inputs_get_clear_errors() {
    let env = Env::new();
    env.write("expired.pem", &expired_cert_pem());
    env.run_line("--cert expired.pem", &ns_s())
        .fails_with("failed to encrypt using an expired certificate on February 15, 2020");
    env.run_line("--cert cert.pem -f nope.yaml", "")
        .fails_with("cannot read nope.yaml given with --secret-file");
    let run = env
        .run_line("--cert cert.pem", "kind: Secret\nmetadata: [oops\n")
        .fails_with("stdin: YAML syntax error");
    assert!(run.stderr.contains("line"), "{}", run.stderr);
    for (input, error) in [
        (
            "kind: Secret\nmetadata: {name: s, namespace: ns}\nstringData: {pin: 1234}\n",
            "stdin: document 1: field stringData.pin must be a string",
        ),
        (
            "kind: ConfigMap\nmetadata: {name: s}\n",
            "expected kind Secret, found ConfigMap",
        ),
        (
            "kind: Secret\nmetadata: {namespace: ns}\nstringData: {k: v}\n",
            "missing metadata.name",
        ),
    ] {
        env.run_line("--cert cert.pem", input).fails_with(error);
    }
    env.write("notacert.pem", "hello");
    env.run_line("--cert notacert.pem", &ns_s())
        .fails_with("notacert.pem: no CERTIFICATE PEM block found");
    let run = env.run_line("--cert cert.pem", "kind: Secret\nmetadata: {name: s, namespace: ns}\ndata: {password: 'not base64 hunter2'}\n")
        .fails_with("data.password is not valid base64");
    assert!(
        !run.stderr.contains("hunter2"),
        "values never reach error messages"
    );
}

#[test]
fn keys_generate_writes_a_usable_key_pair_and_key_secret() {
    let env = Env::new();
    env.run_line(
        "keys generate --key-out k.pem --cert-out c.pem --secret-out ks.yaml --key-size 2048 --my-cn demo",
        "",
    )
    .ok();
    assert_eq!(env.mode("k.pem"), 0o600);
    assert_eq!(env.mode("ks.yaml"), 0o600);
    let cert = keyseal_crypto::Certificate::from_pem(env.read("c.pem").as_bytes()).unwrap();
    assert_eq!(cert.public_key().bits(), 2048);
    let ks = secrets(&env.read("ks.yaml")).remove(0);
    assert_eq!(
        ks.metadata.generate_name.as_deref(),
        Some("sealed-secrets-key")
    );
    assert_eq!(ks.metadata.namespace.as_deref(), Some("kube-system"));
    let sealed = env.run_line("--cert c.pem", &ns_s()).ok().stdout;
    for key in ["k.pem", "ks.yaml"] {
        let run = env
            .run(
                &["--recovery-unseal", "--recovery-private-key", key],
                &sealed,
            )
            .ok();
        assert!(
            run.stdout.contains("\"k\": \"dg==\""),
            "{key}: {}",
            run.stdout
        );
    }
    env.run_line(
        "keys generate --key-out k.pem --cert-out c.pem --key-size 1024",
        "",
    )
    .fails_with("invalid value '1024'");
}
