//! Hostile HTTP clients against the real controller: bodies past the limit, slow-loris and idle
//! connections, slow bodies, malformed and non-UTF-8 bodies, and `/v1/verify` under concurrent
//! load. After each the controller still serves everyone else.
//!
//! The requests are written by hand on raw TCP connections (a client library would refuse to send
//! most of them), from a chosen loopback address when a test needs a second client.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use keyseal_api::Scope;
use keyseal_controller::http::MAX_BODY;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream};

use crate::common::*;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const OTHER_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client

/// A connection to the controller's API listener from `from`.
async fn connect(controller: &ControllerProcess, from: IpAddr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let to = SocketAddr::new(CLIENT, controller.api_port);
    Ok(socket.connect(to).await?)
}

/// The head of a request with `headers` (each `Name: value`), the blank line included.
fn head(method: &str, path: &str, headers: &[String]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: keyseal\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// A POST of `body` with its length, on a kept-alive connection.
fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = head("POST", path, &[format!("Content-Length: {}", body.len())]);
    request.extend_from_slice(body);
    request
}

/// Reads one response: status and body (framed by Content-Length; to the end otherwise).
async fn read_response<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> Result<(u16, String)> {
    let mut line = String::new();
    ensure!(
        reader.read_line(&mut line).await? > 0,
        "connection closed before a response"
    );
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not a status line: {line:?}"))?;
    let mut length = None;
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = Some(value.trim().parse::<usize>()?);
        }
    }
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body).await?;
        }
        None => {
            reader.read_to_end(&mut body).await?;
        }
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Sends `request` on a new connection from `from` and reads the response.
async fn exchange(
    controller: &ControllerProcess,
    from: IpAddr,
    request: &[u8],
) -> Result<(u16, String)> {
    let request = request.to_vec();
    exchange_with(controller, from, |mut write| async move {
        write.write_all(&request).await?;
        Ok(write)
    })
    .await
}

/// Runs `send` on a new connection from `from` while reading the response: the server may answer
/// (413) and close before a large request is written. `send` returns the write half, so that the
/// connection is not half-closed before the answer.
async fn exchange_with<F, Fut>(
    controller: &ControllerProcess,
    from: IpAddr,
    send: F,
) -> Result<(u16, String)>
where
    F: FnOnce(OwnedWriteHalf) -> Fut,
    Fut: Future<Output = std::io::Result<OwnedWriteHalf>> + Send + 'static,
{
    let (read, write) = connect(controller, from).await?.into_split();
    let writer = tokio::spawn(send(write));
    let response = read_response(&mut BufReader::new(read)).await;
    writer.abort();
    response
}

/// Waits until the server closes `stream` (end of file or reset), reading whatever it sends.
async fn closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// `/healthz` and `/v1/cert.pem` answer a new client, and the certificate is the one served
/// before.
async fn still_serving(controller: &ControllerProcess, pem: &str) -> Result<()> {
    let (code, body) = exchange(controller, OTHER_CLIENT, &head("GET", "/healthz", &[])).await?;
    ensure!(code == 200 && body == "ok", "/healthz: {code} {body}");
    let (code, body) =
        exchange(controller, OTHER_CLIENT, &head("GET", "/v1/cert.pem", &[])).await?;
    ensure!(code == 200 && body == pem, "/v1/cert.pem: {code} {body}");
    Ok(())
}

/// The controller's resident memory in KiB.
fn rss_kib(controller: &ControllerProcess) -> Result<u64> {
    let pid = controller.id().context("the controller has exited")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

// ---------------------------------------------------------------------------------------------
// Bodies

/// POSTs a chunked body of `total` bytes in 64 KiB chunks, as fast as the server takes them.
async fn stream_chunked(
    controller: &ControllerProcess,
    path: &str,
    total: usize,
) -> Result<(u16, String)> {
    let request = head("POST", path, &["Transfer-Encoding: chunked".to_owned()]);
    exchange_with(controller, CLIENT, move |mut write| async move {
        let chunk = [b"10000\r\n".as_slice(), &[b'x'; 0x10000], b"\r\n"].concat();
        write.write_all(&request).await?;
        for _ in 0..total / 0x10000 {
            write.write_all(&chunk).await?;
        }
        write.write_all(b"0\r\n\r\n").await?;
        Ok(write)
    })
    .await
}

#[tokio::test]
async fn bodies_past_the_limit_get_413_and_are_not_buffered() -> Result<()> {
    let Running(env, controller, cert, _, _) = Running::start(
        "http-body-limit",
        &["--rate-limit", "1000", "--rate-limit-burst", "1000"],
    )
    .await?;
    let pem = controller.cert_pem().await?;

    // A legitimate SealedSecret as large as a Secret may be (1 MiB of data) is accepted.
    let big_value = "v".repeat(1024 * 1024 - 64);
    let big = env.seal(&cert, "big", &[("blob", &big_value)], Scope::Strict);
    let body = serde_json::to_vec(&big)?;
    println!(
        "a SealedSecret of 1 MiB of data: {} bytes as JSON",
        body.len()
    );
    for path in ["/v1/verify", "/v1/rotate"] {
        let (code, text) = exchange(&controller, CLIENT, &post(path, &body)).await?;
        assert_eq!(code, 200, "{path}: {}", &text[..text.len().min(200)]);
    }

    // The limit is MAX_BODY exactly: a body that size is read (and refused as no SealedSecret),
    // one byte more is not read.
    let at_limit = vec![b' '; MAX_BODY];
    let (code, text) = exchange(&controller, CLIENT, &post("/v1/verify", &at_limit)).await?;
    assert_eq!(code, 400, "{text}");
    let past = vec![b' '; MAX_BODY + 1];
    for path in ["/v1/verify", "/v1/rotate"] {
        let (code, text) = exchange(&controller, CLIENT, &post(path, &past)).await?;
        assert_eq!(code, 413, "{path}: {text}");
        assert!(text.contains("larger than 3 MiB"), "{text}");
    }

    // Declared too large: refused before the body is read.
    let declared = head(
        "POST",
        "/v1/verify",
        &["Content-Length: 104857600".to_owned()],
    );
    let (code, text) = exchange(&controller, CLIENT, &declared).await?;
    assert_eq!(code, 413, "{text}");

    // Streamed without a length: 100 MiB on each of four connections at once. Buffered, that
    // would be 400 MiB.
    let before = rss_kib(&controller)?;
    let streams = (0..4).map(|_| stream_chunked(&controller, "/v1/verify", 100 << 20));
    for response in futures::future::join_all(streams).await {
        let (code, text) = response?;
        assert_eq!(code, 413, "{text}");
    }
    let after = rss_kib(&controller)?;
    println!(
        "resident memory {} MiB before, {} MiB after 4 × 100 MiB streamed bodies",
        before >> 10,
        after >> 10
    );
    assert!(
        after.saturating_sub(before) < 100 << 10,
        "the controller grew by {} MiB reading bodies it refuses",
        after.saturating_sub(before) >> 10
    );
    still_serving(&controller, &pem).await
}

#[tokio::test]
async fn malformed_bodies_get_400_naming_the_problem() -> Result<()> {
    let Running(env, controller, cert, _, _) = Running::start(
        "http-malformed",
        &["--rate-limit", "1000", "--rate-limit-burst", "1000"],
    )
    .await?;
    let pem = controller.cert_pem().await?;
    let good = serde_json::to_string(&env.seal(&cert, "app", &[("k", "v")], Scope::Strict))?;
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_yaml = format!("spec: {}", "[".repeat(100_000));
    let deep_map = format!("{}x", "a: {".repeat(50_000));
    let aliases = (1..10).fold(
        "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n".to_owned(),
        |s, i| {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            format!("{s}a{i}: &a{i} [{refs}]\n")
        },
    );
    let two = format!("{good}\n{good}");
    let secret = good.replace("\"SealedSecret\"", "\"Secret\"");
    let not_base64 = good.replacen("\"k\":\"", "\"k\":\"%%%", 1);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty body", Vec::new(), "no object"),
        ("whitespace", b"  \n\t ".to_vec(), "no object"),
        ("truncated JSON", good[..good.len() / 2].into(), "JSON"),
        (
            "broken YAML",
            b"kind: SealedSecret\nspec: [".to_vec(),
            "YAML",
        ),
        (
            "non-UTF-8",
            b"kind: SealedSecret\n\xff\xfe\x00".to_vec(),
            "UTF-8",
        ),
        (
            "binary junk",
            (0..=255u8).cycle().take(4096).collect(),
            "UTF-8",
        ),
        ("a JSON list", format!("[{good}]").into(), "SealedSecret"),
        ("two SealedSecrets", two.into(), "exactly one"),
        ("another kind", secret.into(), "Secret"),
        ("a string", b"\"SealedSecret\"".to_vec(), "SealedSecret"),
        ("deeply nested JSON", deep_json.into(), "JSON"),
        ("deeply nested YAML flow", deep_yaml.into(), "YAML"),
        ("deeply nested YAML maps", deep_map.into(), "YAML"),
        ("an alias bomb", aliases.into(), ""),
        ("invalid base64 item", not_base64.into(), ""),
    ];
    let mut failures = Vec::new();
    for (what, body, names) in &cases {
        let (code, text) = exchange(&controller, CLIENT, &post("/v1/verify", body))
            .await
            .with_context(|| format!("{what}: {}", controller.logs()))?;
        // An undecryptable item is a 409 (it is a SealedSecret); everything else is not one.
        let expected = if *what == "invalid base64 item" {
            409
        } else {
            400
        };
        println!("{what}: {code} {text}");
        if code != expected || !text.contains(names) {
            failures.push(format!(
                "{what}: {code} {text:?} (expected {expected} naming {names:?})"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        !controller.logs().contains("panicked"),
        "{}",
        controller.logs()
    );
    still_serving(&controller, &pem).await
}

// ---------------------------------------------------------------------------------------------
// Connections

/// How a held connection misbehaves.
#[derive(Clone, Copy, Debug)]
enum Loris {
    /// Connects and sends nothing.
    Silent,
    /// Sends a request's headers one byte every 200 ms, never finishing them.
    Trickle,
    /// Sends one request, reads the answer, and keeps the connection open without another.
    IdleKeepAlive,
}

/// Holds a connection as `kind` does until the server closes it; how long that took.
async fn hold(controller: &ControllerProcess, kind: Loris) -> Result<Duration> {
    let mut stream = connect(controller, CLIENT).await?;
    let started = Instant::now();
    match kind {
        Loris::Silent => closed_by_server(&mut stream).await,
        Loris::Trickle => {
            let (mut read, mut write) = stream.split();
            let trickle = async {
                write
                    .write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
                    .await?;
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    write.write_all(b"a").await?;
                }
                #[allow(unreachable_code)]
                anyhow::Ok(())
            };
            let mut buf = [0u8; 1024];
            let closed = async {
                while let Ok(n) = read.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = trickle => {}
                () = closed => {}
            }
        }
        Loris::IdleKeepAlive => {
            let mut reader = BufReader::new(stream);
            reader
                .get_mut()
                .write_all(&head("GET", "/healthz", &[]))
                .await?;
            let (code, _) = read_response(&mut reader).await?;
            ensure!(code == 200, "/healthz: {code}");
            closed_by_server(reader.get_mut()).await;
        }
    }
    Ok(started.elapsed())
}

#[tokio::test]
async fn slow_loris_and_idle_connections_are_closed_while_others_are_served() -> Result<()> {
    // --read-timeout + --write-timeout = 5 s: the header timeout (at most 10 s).
    let Running(_env, controller, _, _, _) = Running::start(
        "http-slowloris",
        &["--read-timeout", "3s", "--write-timeout", "2s"],
    )
    .await?;
    let pem = controller.cert_pem().await?;
    let kinds = [Loris::Silent, Loris::Trickle, Loris::IdleKeepAlive];
    let held: Vec<_> = (0..500)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            let controller = &controller;
            async move {
                let lived = tokio::time::timeout(Duration::from_secs(60), hold(controller, kind))
                    .await
                    .map_err(|_| {
                        anyhow::anyhow!("a {kind:?} connection still open after 60 s")
                    })??;
                anyhow::Ok((kind, lived))
            }
        })
        .collect();
    let held = futures::future::join_all(held);
    // While the 500 are held, other clients are served.
    let others = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for _ in 0..5 {
            still_serving(&controller, &pem).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::Ok(())
    };
    let (held, others) = tokio::join!(held, others);
    others.context("served while 500 slow connections were held")?;
    let mut lived: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for result in held {
        let (kind, d) = result?;
        lived.entry(format!("{kind:?}")).or_default().push(d);
    }
    for (kind, mut d) in lived {
        d.sort();
        println!(
            "{kind}: {} connections closed by the server after {:?} (median), {:?} (longest)",
            d.len(),
            d[d.len() / 2],
            d[d.len() - 1]
        );
    }
    still_serving(&controller, &pem).await
}

#[tokio::test]
async fn a_body_that_never_arrives_times_out() -> Result<()> {
    let Running(_env, controller, _, _, _) = Running::start(
        "http-slow-body",
        &["--read-timeout", "1s", "--write-timeout", "1s"],
    )
    .await?;
    let pem = controller.cert_pem().await?;
    let mut request = head("POST", "/v1/verify", &["Content-Length: 1000".to_owned()]);
    request.extend_from_slice(b"{\"kind\":");
    let mut stream = BufReader::new(connect(&controller, CLIENT).await?);
    stream.get_mut().write_all(&request).await?;
    let (code, text) = tokio::time::timeout(Duration::from_secs(30), read_response(&mut stream))
        .await
        .context("no answer to a stalled body")??;
    assert_eq!(code, 408, "{text}");
    still_serving(&controller, &pem).await
}

// ---------------------------------------------------------------------------------------------
// /v1/verify rate limiting under load

/// Sends `request` over and over on one kept-alive connection until `until`; the second (since
/// `start`) each answer came in, and its status.
async fn hammer(
    controller: &ControllerProcess,
    request: &[u8],
    start: Instant,
    until: Instant,
) -> Result<Vec<(u64, u16)>> {
    let mut stream = BufReader::new(connect(controller, CLIENT).await?);
    let mut answers = Vec::new();
    while Instant::now() < until {
        stream.get_mut().write_all(request).await?;
        let (code, _) = read_response(&mut stream).await?;
        answers.push((start.elapsed().as_secs(), code));
    }
    Ok(answers)
}

#[tokio::test]
async fn verify_rate_limit_holds_under_concurrent_load() -> Result<()> {
    let (rate, burst) = (5u32, 10u32);
    let Running(env, controller, cert, _, _) = Running::start(
        "http-limit-load",
        &[
            "--rate-limit",
            &rate.to_string(),
            "--rate-limit-burst",
            &burst.to_string(),
        ],
    )
    .await?;
    let pem = controller.cert_pem().await?;
    let body = serde_json::to_vec(&env.seal(&cert, "app", &[("k", "v")], Scope::Strict))?;
    let request = post("/v1/verify", &body);
    let (tasks, load) = (32, Duration::from_secs(4));
    let start = Instant::now();
    let until = start + load;
    let answers = Arc::new(Mutex::new(Vec::new()));
    let hammers = (0..tasks).map(|_| {
        let (controller, request, answers) = (&controller, &request, answers.clone());
        async move {
            let mine = hammer(controller, request, start, until).await?;
            answers.lock().unwrap().extend(mine);
            anyhow::Ok(())
        }
    });
    // Meanwhile: another client's verify, this client's other paths.
    let others = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (code, text) = exchange(&controller, OTHER_CLIENT, &request).await?;
        ensure!(code == 200, "another client's /v1/verify: {code} {text}");
        let rotate = post("/v1/rotate", &body);
        let (code, text) = exchange(&controller, CLIENT, &rotate).await?;
        ensure!(code == 200, "this client's /v1/rotate: {code} {text}");
        for path in ["/healthz", "/v1/cert.pem"] {
            let (code, text) = exchange(&controller, CLIENT, &head("GET", path, &[])).await?;
            ensure!(code == 200, "this client's {path}: {code} {text}");
        }
        still_serving(&controller, &pem).await
    };
    let (hammered, others) = tokio::join!(futures::future::join_all(hammers), others);
    let elapsed = start.elapsed();
    for result in hammered {
        result?;
    }
    others?;

    let answers = answers.lock().unwrap().clone();
    let mut per_second: BTreeMap<u64, (u32, u32)> = BTreeMap::new();
    for (second, code) in &answers {
        let entry = per_second.entry(*second).or_default();
        match code {
            200 => entry.0 += 1,
            429 => entry.1 += 1,
            other => bail!("/v1/verify answered {other} under load"),
        }
    }
    let accepted: u32 = per_second.values().map(|(a, _)| a).sum();
    let refused: u32 = per_second.values().map(|(_, r)| r).sum();
    println!(
        "/v1/verify, {tasks} concurrent connections from one client for {elapsed:.1?}, \
         --rate-limit {rate} --rate-limit-burst {burst}: {accepted} accepted, {refused} refused"
    );
    println!("second  accepted  refused");
    for (second, (a, r)) in &per_second {
        println!("{second:>6}  {a:>8}  {r:>7}");
    }
    let bound = f64::from(burst) + f64::from(rate) * elapsed.as_secs_f64() + 1.0;
    assert!(
        f64::from(accepted) <= bound,
        "{accepted} accepted in {elapsed:?}: more than burst + rate × elapsed + 1 = {bound:.1}"
    );
    assert!(
        accepted >= burst,
        "{accepted} accepted: the first {burst} (the burst) must pass"
    );
    assert!(refused > 0, "the load never reached the limit");
    Ok(())
}
