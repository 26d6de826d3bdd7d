//! Hostile input against the real `weft dev` process, many requests at
//! once: each is refused cleanly (never a 2xx, never a server error), the
//! server's memory stays bounded, and a workflow completes right after.

mod process;

use process::{dev_with_scenarios, http};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use weft::client::{Client, StartSpec};

/// Uploads bodies this large at once, each in chunks and without a
/// length, so the server cannot refuse them unread: it must stop reading
/// at its 4 MiB limit. Were the limit gone, the server would hold
/// `UPLOADS × UPLOAD_BYTES` (1 GiB) at once.
const UPLOADS: usize = 32;
const UPLOAD_BYTES: usize = 32 << 20;

/// The most the server's resident memory may reach (`VmHWM`): a served
/// `weft dev` runs in well under half of it.
const MAX_RSS_KIB: u64 = 384 << 10;

/// Sends a chunked body of up to `bytes` to `path` and gives the status
/// line the server answered with, if the connection let it be read (a
/// server that answers early may close before the upload ends).
fn upload(socket: &str, path: &str, bytes: usize) -> Option<String> {
    let mut stream = TcpStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {socket}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).ok()?;
    let chunk = vec![b' '; 1 << 20];
    let mut sent = 0;
    while sent < bytes {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if stream.write_all(&framed).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.lines()
        .next()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
}

/// The peak resident memory of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_and_the_server_stays_small() {
    let (_dir, host) = dev_with_scenarios();
    let addr = host.address.clone();
    let socket = host.socket();

    // Large bodies without a length, all at once.
    let uploads: Vec<_> = (0..UPLOADS)
        .map(|i| {
            let socket = socket.clone();
            let path = if i % 2 == 0 {
                "/v1/workflows".to_owned()
            } else {
                "/v1/workflows/some-id/signal".to_owned()
            };
            std::thread::spawn(move || upload(&socket, &path, UPLOAD_BYTES))
        })
        .collect();
    let answers: Vec<Option<String>> = uploads.into_iter().map(|t| t.join().unwrap()).collect();
    for answer in answers.iter().flatten() {
        let status: u16 = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status line: {answer}"));
        assert!(
            (400..500).contains(&status),
            "an oversized body is refused, not served nor failed: {answer}"
        );
    }
    assert!(
        answers.iter().flatten().any(|a| a.contains(" 413 ")),
        "at least one upload read its 413: {answers:?}"
    );

    // Bodies within the limit that are hostile to parse or to store.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let long_id = "i".repeat(1 << 20);
    let hostile = [
        deep.clone(),
        json!({"workflow_type": "sleep", "workflow_id": long_id, "input": 1, "module": "scenarios"})
            .to_string(),
        json!({"workflow_type": "sleep", "workflow_id": "nul\u{0}id", "input": 1, "module": "scenarios"})
            .to_string(),
        format!(
            r#"{{"workflow_type": "sleep", "workflow_id": "deep", "input": {deep}, "module": "scenarios"}}"#
        ),
    ];
    for body in &hostile {
        let (status, answer) = http(&socket, "POST", "/v1/workflows", None, body.as_bytes());
        assert!(
            (400..500).contains(&status),
            "refused as the caller's fault: {status} {answer}"
        );
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }

    let peak = peak_rss_kib(host.pid());
    eprintln!("the server's memory peaked at {} MiB", peak >> 10);
    assert!(
        peak < MAX_RSS_KIB,
        "the server's memory peaked at {} MiB",
        peak >> 10
    );

    // And it serves a workflow right after.
    let client = Client::connect(&addr, None).await.expect("connect");
    let mut spec = StartSpec::new("sleep", "after-the-storm", json!(1));
    spec.module = Some("scenarios".into());
    let (_, run) = client
        .start_and_wait(spec, Duration::from_secs(30))
        .await
        .expect("start");
    assert_eq!(run.status, "completed", "{run:?}");
}
