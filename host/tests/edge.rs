//! The API's edge through a real server on loopback: body limits checked on
//! bytes before parsing, every framework refusal in the API's JSON error
//! shape, waits capped per call with the client and the CLI asking again.
//! The host is served in this process with the limits a test sets (a wait
//! limit of 200 ms, not a minute); the CLI is the real `weft` binary.

mod common;
mod process;

use common::{Backend, TestHost};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tokio::sync::oneshot;
use weft::api::{Limits, ServeOptions, Tokens};
use weft::client::{Client, StartSpec};
use weft::worker::{Worker, WorkerOptions};
use weft::{Activities, ActivityContext, ActivityError};

/// A host serving the API on a loopback port with `limits`.
struct Served {
    t: TestHost,
    /// `http://127.0.0.1:PORT`
    address: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Served {
    async fn new(backend: Backend, limits: Limits) -> Self {
        let t = TestHost::new(backend, Activities::new()).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let options = ServeOptions {
            limits,
            ..ServeOptions::new(Tokens::open())
        };
        tokio::spawn(weft::api::serve_with(
            t.host.clone(),
            listener,
            options,
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            t,
            address,
            stop: Some(stop),
        }
    }

    fn socket(&self) -> String {
        self.address.trim_start_matches("http://").to_owned()
    }

    async fn client(&self) -> Client {
        Client::connect(&self.address, None).await.unwrap()
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.t.stop().await;
    }
}

/// An HTTP/1.1 exchange that tolerates a server answering before it read
/// the whole body (what a refused body gets): `(status, head, body)`.
fn exchange(socket: &str, head: &str, body: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    if head.contains("Expect: 100-continue") {
        // The answer comes before the body is sent (curl's way with large bodies).
        let mut first = [0u8; 25];
        stream.read_exact(&mut first).unwrap();
        let mut raw = first.to_vec();
        if first.starts_with(b"HTTP/1.1 100") {
            let _ = stream.write_all(body);
            raw.clear();
        }
        let _ = stream.read_to_end(&mut raw);
        return parse(&raw);
    }
    // The server may close the connection before it read everything.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse(&raw)
}

fn parse(raw: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

fn request(socket: &str, method: &str, path: &str, extra: &str, body: &[u8]) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {socket}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
}

/// A request with a JSON body; the answer as JSON.
fn call(socket: &str, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let (status, _, text) = exchange(socket, &request(socket, method, path, "", body), body);
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// `body` as an `error` of the API's shape: its code, and that it is not retryable.
fn error_of(body: &Value) -> (&str, &str) {
    let e = &body["error"];
    assert_eq!(e["retryable"], json!(false), "{body}");
    (e["code"].as_str().unwrap(), e["message"].as_str().unwrap())
}

/// `wasm` with a custom section of `padding` zero bytes at its end: the same
/// component, as large as a test needs.
fn padded(wasm: &[u8], padding: usize) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"padding";
    let mut content = Vec::new();
    leb(name.len(), &mut content);
    content.extend_from_slice(name);
    content.resize(content.len() + padding, 0);
    let mut out = wasm.to_vec();
    out.push(0);
    leb(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}

/// A body over 4 MiB is refused before it is parsed, with a JSON 413 naming
/// the limit and the setting, whether its length is declared or not; a gRPC
/// message over it gets ResourceExhausted saying the same; the host then
/// serves a workflow as ever.
async fn bodies_over_the_limit_are_refused_and_the_host_serves_on(backend: Backend) {
    let s = Served::new(backend, Limits::default()).await;
    let socket = s.socket();
    let over = vec![b' '; (4 << 20) + 1];

    let head = request(
        &socket,
        "POST",
        "/v1/workflows",
        "Expect: 100-continue\r\n",
        &over,
    );
    let sock = socket.clone();
    let (status, _, text) = tokio::task::spawn_blocking(move || exchange(&sock, &head, &[]))
        .await
        .unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    assert_eq!(status, 413, "{body}");
    let (code, message) = error_of(&body);
    assert_eq!(code, "resource_exhausted");
    assert!(message.contains("4194305 bytes"), "{message}");
    assert!(message.contains("limit of 4194304 bytes"), "{message}");
    assert!(message.contains("--max-request-bytes"), "{message}");

    // Chunked: no length to go by; refused as it passes the limit.
    let mut chunked = Vec::new();
    for piece in over.chunks(1 << 16) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST /v1/workflows/w/signals/s HTTP/1.1\r\nHost: {socket}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let sock = socket.clone();
    let (status, _, text) = tokio::task::spawn_blocking(move || exchange(&sock, &head, &chunked))
        .await
        .unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    assert_eq!(status, 413, "{body}");
    let (code, message) = error_of(&body);
    assert_eq!(code, "resource_exhausted");
    assert!(message.contains("limit of 4194304 bytes"), "{message}");

    // gRPC: a start whose input is over the WorkflowService's limit.
    let client = s.client().await;
    let big = json!("x".repeat(5 << 20));
    let e = client
        .start(StartSpec::new("counter", "big-1", big))
        .await
        .unwrap_err();
    assert_eq!(e.code, tonic::Code::ResourceExhausted, "{e}");
    assert!(e.message.contains("limit of 4194304 bytes"), "{e}");
    assert!(e.message.contains("--max-request-bytes"), "{e}");

    // The host serves on: a workflow from start to result.
    let module = s.t.deploy("test-scenarios").await;
    let run =
        s.t.start(&module, "counter", "after-1", json!({"signals": 1}))
            .await;
    let (status, _) = call(&socket, "POST", "/v1/workflows/after-1/signals/add", b"4");
    assert_eq!(status, 200);
    let view = client
        .await_result("after-1", Some(run.as_str()), None)
        .await
        .unwrap();
    assert_eq!(
        (view.status.as_str(), view.output),
        ("completed", Some(json!(4)))
    );
    s.stop().await;
}

/// A malformed path, query or body, a method a route does not take: each
/// is the API's JSON error, not the framework's text; the web UI answers a
/// page (HTML), never plain text.
async fn framework_refusals_are_the_api_error(backend: Backend) {
    let s = Served::new(backend, Limits::default()).await;
    let socket = s.socket();
    let sock = socket.clone();
    tokio::task::spawn_blocking(move || {
        let socket = sock;
        let (status, body) = call(&socket, "GET", "/v1/workflows/%FF%FE", b"");
        assert_eq!(status, 400, "{body}");
        let (code, message) = error_of(&body);
        assert_eq!(code, "invalid_argument");
        assert!(message.contains("percent-encode"), "{message}");

        let (status, body) = call(
            &socket,
            "GET",
            "/v1/workflows/x/result?timeout_ms=soon",
            b"",
        );
        assert_eq!(status, 400, "{body}");
        let (code, message) = error_of(&body);
        assert_eq!(code, "invalid_argument");
        assert!(message.contains("query string"), "{message}");

        let (status, body) = call(&socket, "GET", "/v1/workflows?limit=-1", b"");
        assert_eq!(status, 400, "{body}");
        error_of(&body);

        let (status, body) = call(&socket, "POST", "/v1/workflows", b"{\"workflow_type\": ");
        assert_eq!(status, 400, "{body}");
        let (code, _) = error_of(&body);
        assert_eq!(code, "invalid_argument");

        let (status, body) = call(&socket, "DELETE", "/v1/workflows", b"");
        assert_eq!(status, 405, "{body}");
        let (code, message) = error_of(&body);
        assert_eq!(code, "unimplemented");
        assert!(message.contains("DELETE"), "{message}");

        let head = request(&socket, "GET", "/ui/workflows/%FF", "", b"");
        let (status, head, page) = exchange(&socket, &head, b"");
        assert_eq!(status, 400, "{head}");
        assert!(head.contains("content-type: text/html"), "{head}");
        assert!(page.contains("percent-encode"), "{page}");
        let head = request(&socket, "GET", "/ui?status=%FF", "", b"");
        let (status, head, _) = exchange(&socket, &head, b"");
        assert_eq!(status, 400, "{head}");
        assert!(head.contains("content-type: text/html"), "{head}");
    })
    .await
    .unwrap();
    s.stop().await;
}

/// A module over the request limit but under the module limit deploys, over
/// HTTP and gRPC; one over the module limit is refused naming that limit.
async fn modules_have_a_limit_of_their_own(backend: Backend) {
    let limits = Limits {
        module_bytes: 8 << 20,
        ..Limits::default()
    };
    let s = Served::new(backend, limits).await;
    let socket = s.socket();
    let wasm = common::guest("test-scenarios");
    let five_mib = padded(&wasm, 5 << 20);
    assert!(five_mib.len() > 4 << 20);

    let sock = socket.clone();
    let body = five_mib.clone();
    let (status, deployed) =
        tokio::task::spawn_blocking(move || call(&sock, "PUT", "/v1/modules/big?version=1", &body))
            .await
            .unwrap();
    assert_eq!(status, 200, "{deployed}");
    assert_eq!(
        deployed["module"]["size"],
        json!(five_mib.len()),
        "{deployed}"
    );

    let client = s.client().await;
    let other = padded(&wasm, (5 << 20) + 1);
    let module = client.deploy("big", Some("2"), other).await.unwrap();
    assert_eq!(module.version, "2");

    let nine_mib = padded(&wasm, 9 << 20);
    let sock = socket.clone();
    let body = nine_mib.clone();
    let (status, refused) = tokio::task::spawn_blocking(move || {
        let head = request(
            &sock,
            "PUT",
            "/v1/modules/big?version=3",
            "Expect: 100-continue\r\n",
            &body,
        );
        let (status, _, text) = exchange(&sock, &head, &body);
        (status, serde_json::from_str::<Value>(&text).unwrap())
    })
    .await
    .unwrap();
    assert_eq!(status, 413, "{refused}");
    let (_, message) = error_of(&refused);
    assert!(message.contains("limit of 8388608 bytes"), "{message}");
    assert!(message.contains("--max-module-bytes"), "{message}");
    let e = client.deploy("big", Some("3"), nine_mib).await.unwrap_err();
    assert_eq!(e.code, tonic::Code::ResourceExhausted, "{e}");
    assert!(e.message.contains("--max-module-bytes"), "{e}");
    s.stop().await;
}

/// With a wait limit of 200 ms: a result asked with the longest timeout
/// there is answers `closed: false`; an update the run cannot answer yet
/// (its handler waits on an activity nobody serves) answers
/// `deadline_exceeded` with its update id, and asking again with that id
/// neither sends it twice nor loses it; the client, `weft wait` and `weft
/// update` ask again until the answer comes.
async fn waits_are_capped_and_callers_wait_on(backend: Backend) {
    let limits = Limits {
        wait: Duration::from_millis(200),
        ..Limits::default()
    };
    let s = Served::new(backend, limits).await;
    let socket = s.socket();
    let module = s.t.deploy("test-primitives").await;
    s.t.start(&module, "updatable", "cap-1", json!(0)).await;

    let sock = socket.clone();
    let (status, waited) = tokio::task::spawn_blocking(move || {
        call(
            &sock,
            "GET",
            &format!("/v1/workflows/cap-1/result?timeout_ms={}", u64::MAX),
            b"",
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{waited}");
    assert_eq!(waited["closed"], json!(false), "{waited}");
    assert_eq!(waited["run"]["status"], json!("running"), "{waited}");

    let sock = socket.clone();
    let (status, pending) = tokio::task::spawn_blocking(move || {
        call(
            &sock,
            "POST",
            "/v1/workflows/cap-1/updates/add?update_id=u-1",
            b"5",
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 504, "{pending}");
    assert_eq!(pending["error"]["code"], json!("deadline_exceeded"));
    assert_eq!(pending["error"]["retryable"], json!(true));
    let message = pending["error"]["message"].as_str().unwrap();
    assert!(message.contains("update_id u-1"), "{message}");

    // Callers that wait on: the client, `weft wait`, `weft update`.
    let client = s.client().await;
    let awaited = tokio::spawn({
        let client = client.clone();
        async move { client.await_result("cap-1", None, None).await }
    });
    let address = s.address.clone();
    let cli_wait = tokio::task::spawn_blocking(move || {
        process::weft(&address, &["wait", "cap-1", "--output", "json"])
    });
    let address = s.address.clone();
    let cli_update = tokio::task::spawn_blocking(move || {
        process::weft(
            &address,
            &["update", "cap-1", "add", "--input", "7", "--output", "json"],
        )
    });
    // Several wait limits pass before the answer can come: a caller that
    // did not ask again would have returned "running" (and `weft wait`
    // failed) by then.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut echo = Activities::new();
    echo.register("echo", |_: ActivityContext, text: String| async move {
        Ok::<_, ActivityError>(text)
    });
    let options = WorkerOptions {
        worker_id: "echo".into(),
        poll_wait: Duration::from_millis(200),
        ..WorkerOptions::default()
    };
    let worker = Worker::connect(&s.address, options).unwrap();
    let (stop_worker, worker_stopped) = oneshot::channel::<()>();
    let worker = tokio::spawn(async move {
        worker
            .run(echo, async {
                let _ = worker_stopped.await;
            })
            .await
    });

    let updated = cli_update.await.unwrap().json();
    let sock = socket.clone();
    let (status, again) = tokio::task::spawn_blocking(move || {
        call(
            &sock,
            "POST",
            "/v1/workflows/cap-1/updates/add?update_id=u-1",
            b"5",
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{again}");
    // Each update applied once, in either order: 0 + 5 + 7.
    let mut answers = vec![updated.as_i64().unwrap(), again["output"].as_i64().unwrap()];
    answers.sort();
    assert!(answers == [5, 12] || answers == [7, 12], "{answers:?}");

    let (status, _) =
        call_async(&socket, "POST", "/v1/workflows/cap-1/signals/done", b"null").await;
    assert_eq!(status, 200);
    let run = awaited.await.unwrap().unwrap();
    assert_eq!(
        (run.status.as_str(), run.output),
        ("completed", Some(json!(12)))
    );
    let shown = cli_wait.await.unwrap().json();
    assert_eq!(shown["status"], json!("completed"), "{shown}");
    assert_eq!(shown["output"], json!(12), "{shown}");

    let _ = stop_worker.send(());
    let _ = worker.await;
    s.stop().await;
}

async fn call_async(socket: &str, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let (socket, method, path, body) = (
        socket.to_owned(),
        method.to_owned(),
        path.to_owned(),
        body.to_vec(),
    );
    tokio::task::spawn_blocking(move || call(&socket, &method, &path, &body))
        .await
        .unwrap()
}

both_backends!(
    bodies_over_the_limit_are_refused_and_the_host_serves_on,
    framework_refusals_are_the_api_error,
    modules_have_a_limit_of_their_own,
    waits_are_capped_and_callers_wait_on,
);
