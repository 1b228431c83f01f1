//! A tiny HTTP/1.1 server for tests of the service proxy path, meant to run inside the network
//! namespace: `keyseal-netns-http <listen-addr> <body>` answers every request with
//! `200 OK` and `<body> <request-path>\n`, one connection at a time, until killed.
#![forbid(unsafe_code)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(body)) = (args.next(), args.next()) else {
        eprintln!("usage: keyseal-netns-http <listen-addr> <body>");
        std::process::exit(2);
    };
    let listener = TcpListener::bind(&addr)?;
    eprintln!("keyseal-netns-http: listening on {addr}");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() {
            continue;
        }
        // Skip the headers.
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        let payload = format!("{body} {path}\n");
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{payload}",
            payload.len()
        );
    }
    Ok(())
}
