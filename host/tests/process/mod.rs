//! Driving the real `weft` binary: a host process, CLI invocations, raw HTTP.
#![allow(dead_code, unreachable_pub)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A `weft dev` or `weft server` process, killed when dropped.
pub struct HostProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub address: String,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl HostProcess {
    /// Spawns `weft ARGS --listen 127.0.0.1:0` and waits (up to 60 s) for it to listen.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::start_on("127.0.0.1:0", args, envs)
    }

    /// Like [`start`](Self::start), listening on `listen` (a restarted host
    /// on its predecessor's address).
    pub fn start_on(listen: &str, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(WEFT);
        cmd.args(args)
            .args(["--listen", listen])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "weft=info");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the weft binary");
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let address = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "weft {args:?} did not start listening within 60 s; its log: {:#?}",
                    log.lock().unwrap()
                );
            }
        };
        Self {
            child,
            address,
            log,
        }
    }

    /// The host's port on loopback (for raw HTTP).
    pub fn socket(&self) -> String {
        self.address.trim_start_matches("http://").to_owned()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What one CLI invocation did.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "weft failed: {self:#?}");
        &self.stdout
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"))
    }

    pub fn failed(&self) -> &str {
        assert_ne!(self.code, 0, "weft should have failed: {self:#?}");
        &self.stderr
    }
}

/// Runs `weft ARGS` against `address`, killed after 90 s.
/// A `weft dev` on a fresh SQLite database in a directory of its own, with
/// the scenarios test guest deployed as `scenarios`. Bind it as
/// `let (_dir, host) = …` so that the host stops before its directory goes.
pub fn dev_with_scenarios() -> (tempfile::TempDir, HostProcess) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("weft.db");
    let host = HostProcess::start(&["dev", "--database", db.to_str().unwrap()], &[]);
    let scenarios = guest_path("test-scenarios");
    weft(
        &host.address,
        &["deploy", scenarios.to_str().unwrap(), "--name", "scenarios"],
    )
    .ok();
    (dir, host)
}

pub fn weft(address: &str, args: &[&str]) -> Ran {
    weft_env(address, args, &[])
}

pub fn weft_env(address: &str, args: &[&str], envs: &[(&str, &str)]) -> Ran {
    let mut cmd = Command::new(WEFT);
    cmd.args(args)
        .env("WEFT_ADDRESS", address)
        .env_remove("WEFT_TOKEN")
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    run_bounded(cmd, Duration::from_secs(90))
}

pub fn run_bounded(mut cmd: Command, limit: Duration) -> Ran {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ran {
        code: status.code().unwrap_or(-1),
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

pub fn output(o: Output) -> Ran {
    Ran {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

/// One HTTP/1.1 request over a fresh connection: (status, JSON body).
pub fn http(
    socket: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    http_as(socket, method, path, token, "application/json", body)
}

/// Like [`http`], with the body sent as `content_type` (`curl -d` sends
/// `application/x-www-form-urlencoded`).
pub fn http_as(
    socket: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", content_type)];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    let (status, _, body) = http_raw(socket, method, path, &headers, body);
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, value)
}

/// One HTTP/1.1 request with these headers: (status, response headers, body).
pub fn http_raw(
    socket: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    let mut extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    // Addressed to the socket unless the caller names the host itself.
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        extra = format!("Host: {socket}\r\n{extra}");
    }
    let head = format!(
        "{method} {path} HTTP/1.1\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

/// A guest component built by `scripts/build-guests`, as a file path.
pub fn guest_path(crate_name: &str) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"));
    let path = workspace
        .join(dir)
        .join("wasm32-wasip2/guest")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        path.exists(),
        "{} is missing; build the guests first with `scripts/build-guests` (the test command `scripts/test` does)",
        path.display()
    );
    path
}

/// Polls `f` every 50 ms for up to 60 s.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
