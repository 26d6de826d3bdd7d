//! The service end to end: the real `weft` binary as a host process, driven
//! through its CLI and through HTTP, as a user would from a terminal and `curl`.

mod process;

use process::{HostProcess, eventually, guest_path, http, http_as, http_raw, weft, weft_env};
use serde_json::{Value, json};

fn scenarios() -> String {
    guest_path("test-scenarios").to_str().unwrap().to_owned()
}

#[test]
fn dev_host_through_the_cli_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("weft.db");
    let host = HostProcess::start(&["dev", "--database", db.to_str().unwrap()], &[]);
    let addr = host.address.as_str();
    let socket = host.socket();

    // Deploy over the CLI: text, then the same bytes again as JSON (a no-op).
    let out = weft(
        addr,
        &[
            "deploy",
            &scenarios(),
            "--name",
            "scenarios",
            "--version",
            "1",
        ],
    );
    assert!(
        out.ok().starts_with("deployed module scenarios 1 (sha256 "),
        "{out:?}"
    );
    let module = weft(
        addr,
        &[
            "deploy",
            &scenarios(),
            "--name",
            "scenarios",
            "--version",
            "1",
            "--output",
            "json",
        ],
    )
    .json();
    assert_eq!(module["is_default"], json!(true), "{module}");
    let sha = module["module"]["sha256"].as_str().unwrap().to_owned();
    assert_eq!(sha.len(), 64);
    let listed = weft(addr, &["modules", "--output", "json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // Start a counter that sums two `add` signals.
    let started = weft(
        addr,
        &[
            "start",
            "counter",
            "--id",
            "count-1",
            "--module",
            "scenarios",
            "--input",
            r#"{"signals": 2}"#,
            "--output",
            "json",
        ],
    )
    .json();
    let run_id = started["run_id"].as_str().unwrap().to_owned();
    assert_eq!(started["module_sha256"], json!(sha));

    // Signal through the CLI, query through the CLI.
    weft(addr, &["signal", "count-1", "add", "--input", "5"]).ok();
    let total = eventually("the first signal to be counted", || {
        let out = weft(addr, &["query", "count-1", "total", "--output", "json"]).json();
        (out == json!(5)).then_some(out)
    });
    assert_eq!(total, json!(5));

    // The same run over HTTP: describe, signal, wait for the result.
    let (status, run) = http(&socket, "GET", "/v1/workflows/count-1", None, b"");
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "running");
    assert_eq!(run["run_id"], json!(run_id));
    let (status, body) = http(
        &socket,
        "POST",
        "/v1/workflows/count-1/queries/total",
        None,
        b"",
    );
    assert_eq!((status, &body["output"]), (200, &json!(5)));
    let (status, body) = http(
        &socket,
        "POST",
        "/v1/workflows/count-1/signals/add",
        None,
        b"7",
    );
    assert_eq!(status, 200, "{body}");
    let (status, done) = http(
        &socket,
        "GET",
        "/v1/workflows/count-1/result?timeout_ms=60000",
        None,
        b"",
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["closed"], true);
    assert_eq!(done["run"]["status"], "completed");
    assert_eq!(done["run"]["output"], json!(12));

    // The history, over HTTP and the CLI, with the chain verified.
    let (status, history) = http(&socket, "GET", "/v1/workflows/count-1/history", None, b"");
    assert_eq!(status, 200);
    assert_eq!(history["chain_verified"], true);
    let kinds: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"workflow_started"));
    assert_eq!(kinds.last(), Some(&"workflow_completed"));
    assert_eq!(
        kinds.iter().filter(|k| **k == "signal_received").count(),
        2,
        "{kinds:?}"
    );
    let shown = weft(addr, &["show", "count-1"]);
    assert!(shown.ok().contains("hash chain verified"), "{shown:?}");
    assert!(shown.ok().contains("workflow_completed"), "{shown:?}");
    let replay = weft(addr, &["replay", "count-1"]);
    assert!(replay.ok().contains("replays identically"), "{replay:?}");
    assert!(replay.ok().contains("ends completed"), "{replay:?}");

    // An open host takes no write that a web page could send it across
    // sites: not a form (what plain `curl -d` sends) nor text, and nothing
    // addressed to a name other than loopback's (DNS rebinding).
    let start = br#"{"workflow_type": "counter", "workflow_id": "count-2", "module": "scenarios", "input": {"signals": 3}}"#;
    for content_type in ["application/x-www-form-urlencoded", "text/plain"] {
        let (status, body) = http_as(&socket, "POST", "/v1/workflows", None, content_type, start);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (415, Some("invalid_argument")),
            "{body}"
        );
        assert!(
            body.to_string().contains("content-type: application/json"),
            "{body}"
        );
    }
    let (status, _, body) = http_raw(
        &socket,
        "GET",
        "/v1/workflows",
        &[("Host", "rebound.example:7233")],
        b"",
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("DNS rebinding"), "{body}");
    // Started as JSON, then cancelled and terminated through the CLI.
    let (status, body) = http(&socket, "POST", "/v1/workflows", None, start);
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(&socket, "POST", "/v1/workflows", None, br#"{"input": 1}"#);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("workflow_type"),
        "{body}"
    );
    let out = weft(addr, &["cancel", "count-2", "--reason", "customer left"]);
    assert!(out.ok().contains("asked run"), "{out:?}");
    let described = eventually("the cancel request to show", || {
        let d = weft(addr, &["describe", "count-2", "--output", "json"]).json();
        (d["cancel_requested"] == json!("customer left") || d["status"] != json!("running"))
            .then_some(d)
    });
    assert!(described["run_id"].is_string());
    weft(addr, &["terminate", "count-2", "--reason", "test over"]).ok();
    let ended = weft(addr, &["wait", "count-2", "--output", "json"]);
    assert_ne!(
        ended.code, 0,
        "waiting on a terminated run fails the command: {ended:?}"
    );
    let ended: Value = serde_json::from_str(&ended.stdout).unwrap();
    assert_eq!(ended["status"], "terminated");

    // Listing, by status.
    let completed = weft(addr, &["list", "--status", "completed", "--output", "json"]).json();
    assert_eq!(completed["runs"].as_array().unwrap().len(), 1);
    assert_eq!(completed["runs"][0]["workflow_id"], "count-1");
    assert_eq!(
        completed.get("next_page_token"),
        None,
        "one page holds them all"
    );
    let table = weft(addr, &["list"]);
    assert!(
        table.ok().contains("count-2") && table.ok().contains("terminated"),
        "{table:?}"
    );
    let (status, body) = http(&socket, "GET", "/v1/workflows?status=terminated", None, b"");
    assert_eq!((status, body["runs"].as_array().unwrap().len()), (200, 1));

    // What the host did, for Prometheus.
    let (status, metrics) = http(&socket, "GET", "/metrics", None, b"");
    assert_eq!(status, 200, "{metrics}");
    let metrics = metrics.as_str().expect("the metrics are text");
    for line in [
        "weft_runs_started_total 2",
        "weft_runs_closed_total{status=\"completed\"} 1",
        "weft_runs_closed_total{status=\"terminated\"} 1",
        "weft_activations_in_flight 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line:?} is missing from\n{metrics}"
        );
    }
    assert!(
        metrics.contains("weft_activations_total{result=\"committed\"} "),
        "{metrics}"
    );

    // The web UI: the runs, one run's history, the modules, as a browser sees them.
    let page = |path: &str| {
        let (status, _, body) = http_raw(&socket, "GET", path, &[], b"");
        (status, body)
    };
    let (status, runs) = page("/ui");
    assert_eq!(status, 200, "{runs}");
    assert!(
        runs.contains(r#"href="/ui/workflows/count-1?run_id="#)
            && runs.contains("badge completed")
            && runs.contains("badge terminated")
            && runs.contains(">scenarios "),
        "the runs, their statuses and their module's name: {runs}"
    );
    let (status, terminated) = page("/ui?status=terminated");
    assert_eq!(status, 200);
    assert!(
        terminated.contains("count-2") && !terminated.contains("count-1"),
        "{terminated}"
    );
    let (status, run) = page("/ui/workflows/count-1");
    assert_eq!(status, 200, "{run}");
    for part in [
        "hash chain verified",
        "<code>workflow_started</code>",
        "<code>signal_received</code>",
        "<code>workflow_completed</code>",
    ] {
        assert!(run.contains(part), "{part:?} is missing from\n{run}");
    }
    assert!(!run.contains("http-equiv"), "a closed run's page stays put");
    let (status, modules) = page("/ui/modules");
    assert_eq!(status, 200);
    assert!(modules.contains("scenarios"), "{modules}");
    let (status, missing) = page("/ui/workflows/nobody");
    assert_eq!(status, 404);
    assert!(missing.contains("nobody"), "{missing}");

    // Start and wait in one request, over HTTP and from the CLI.
    let (status, done) = http(
        &socket,
        "POST",
        "/v1/workflows",
        None,
        br#"{"workflow_type": "counter", "workflow_id": "count-0", "module": "scenarios",
             "input": {"signals": 0}, "wait_ms": 60000}"#,
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["workflow_id"], "count-0");
    assert_eq!(done["closed"], true, "{done}");
    assert_eq!(done["run"]["status"], "completed");
    assert_eq!(done["run"]["output"], json!(0));
    let waited = weft(
        addr,
        &[
            "start",
            "counter",
            "--id",
            "count-00",
            "--module",
            "scenarios",
            "--input",
            r#"{"signals": 0}"#,
            "--wait",
            "--output",
            "json",
        ],
    )
    .json();
    assert_eq!(waited["status"], "completed", "{waited}");
    assert_eq!(waited["output"], json!(0));

    // Bad input: clear errors, non-zero exits, nothing lost.
    let e = weft(addr, &["signal", "no-such-id", "add", "--input", "1"]);
    assert!(e.failed().contains("no-such-id"), "{e:?}");
    let e = weft(addr, &["start", "counter", "--id", "x", "--module", "nope"]);
    assert!(e.failed().contains("no module named \"nope\""), "{e:?}");
    let e = weft(
        addr,
        &[
            "start",
            "counter",
            "--id",
            "x",
            "--module",
            "scenarios",
            "--input",
            "{oops",
        ],
    );
    assert!(e.failed().contains("--input is not JSON"), "{e:?}");
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not a component").unwrap();
    let e = weft(addr, &["deploy", junk.to_str().unwrap(), "--name", "junk"]);
    assert!(e.failed().contains("junk"), "{e:?}");
    let (status, body) = http(
        &socket,
        "POST",
        "/v1/workflows/count-1/signals/add",
        None,
        b"{oops",
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_argument");
    let (status, body) = http(&socket, "GET", "/v1/workflows/nobody", None, b"");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let e = weft("http://127.0.0.1:1", &["list"]);
    assert_eq!(
        e.code, 75,
        "an unreachable host is a retryable failure: {e:?}"
    );
    assert!(e.stderr.contains("cannot reach a Weft host"), "{e:?}");

    // An id that holds a terminal escape is printed escaped, never obeyed.
    weft(
        addr,
        &[
            "start",
            "counter",
            "--id",
            "evil\u{1b}]0;pwned\u{7}",
            "--module",
            "scenarios",
            "--input",
            r#"{"signals": 1}"#,
        ],
    )
    .ok();
    for args in [&["list"][..], &["describe", "evil\u{1b}]0;pwned\u{7}"]] {
        let out = weft(addr, args).ok().to_owned();
        assert!(
            !out.contains('\u{1b}') && out.contains("evil\\u{1b}]0;pwned\\u{7}"),
            "{args:?}: {out:?}"
        );
    }
}

#[test]
fn server_requires_tokens_and_admin_for_deploys() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("weft.db");
    let db = db.to_str().unwrap();
    // No tokens: the server refuses to start.
    let refused = weft(
        "http://127.0.0.1:1",
        &["server", "--database", db, "--listen", "127.0.0.1:0"],
    );
    assert!(
        refused.failed().contains("WEFT_ADMIN_TOKENS"),
        "{refused:?}"
    );

    let host = HostProcess::start(
        &["server", "--database", db, "--host-id", "tokens-test"],
        &[
            ("WEFT_ADMIN_TOKENS", "admin-secret"),
            ("WEFT_TOKENS", "user-secret"),
        ],
    );
    let addr = host.address.as_str();
    let socket = host.socket();

    let e = weft(addr, &["list"]);
    assert!(e.failed().contains("bearer token"), "{e:?}");
    let e = weft_env(addr, &["list"], &[("WEFT_TOKEN", "wrong")]);
    assert!(e.failed().contains("not one this host accepts"), "{e:?}");
    let e = weft_env(
        addr,
        &["deploy", &scenarios(), "--name", "scenarios"],
        &[("WEFT_TOKEN", "user-secret")],
    );
    assert!(e.failed().contains("admin token"), "{e:?}");
    weft_env(
        addr,
        &["deploy", &scenarios(), "--name", "scenarios"],
        &[("WEFT_TOKEN", "admin-secret")],
    )
    .ok();
    let runs = weft_env(
        addr,
        &["list", "--output", "json"],
        &[("WEFT_TOKEN", "user-secret")],
    )
    .json();
    assert_eq!(runs, json!({"runs": []}));
    // Checking bytes compiles them: an admin's power.
    let e = weft_env(
        addr,
        &["check", &scenarios(), "--name", "scenarios"],
        &[("WEFT_TOKEN", "user-secret")],
    );
    assert!(e.failed().contains("admin token"), "{e:?}");
    weft_env(
        addr,
        &["check", &scenarios(), "--name", "scenarios"],
        &[("WEFT_TOKEN", "admin-secret")],
    )
    .ok();

    let (status, body) = http(&socket, "GET", "/v1/workflows", None, b"");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, _) = http(&socket, "GET", "/v1/workflows", Some("user-secret"), b"");
    assert_eq!(status, 200);
    let (status, body) = http(
        &socket,
        "PUT",
        "/v1/modules/other",
        Some("user-secret"),
        b"\0asm",
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("permission_denied"))
    );
    let (status, _) = http(&socket, "GET", "/healthz", None, b"");
    assert_eq!(status, 200);
    let (status, _) = http(&socket, "GET", "/metrics", None, b"");
    assert_eq!(status, 401, "metrics need a token like every read");
    let (status, metrics) = http(&socket, "GET", "/metrics", Some("user-secret"), b"");
    assert_eq!(status, 200);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("weft_runs_started_total 0"),
        "{metrics}"
    );

    // The web UI: a browser signs in once, with the form's CSRF value; its
    // cookie is a session id, not the token, reads pages and nothing else,
    // and ends at sign-out.
    let (status, head, _) = http_raw(&socket, "GET", "/ui", &[], b"");
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("location: /ui/login"), "{head}");
    let (status, head, form) = http_raw(&socket, "GET", "/ui/login", &[], b"");
    assert_eq!(status, 200);
    assert!(form.contains(r#"name="token""#), "{form}");
    let csrf_cookie = cookie_named(&head, "weft_login_csrf");
    let csrf = csrf_cookie
        .trim_start_matches("weft_login_csrf=")
        .to_owned();
    assert_eq!(csrf.len(), 64, "{head}");
    assert!(
        form.contains(&format!(r#"name="csrf" value="{csrf}""#)),
        "{form}"
    );
    let sign_in = |cookie: Option<&str>, body: &str| {
        let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
        if let Some(cookie) = cookie {
            headers.push(("Cookie", cookie));
        }
        http_raw(&socket, "POST", "/ui/login", &headers, body.as_bytes())
    };
    // Without the form's CSRF value, or with another one: refused.
    let (status, head, page) = sign_in(None, "token=user-secret");
    assert_eq!(status, 403, "{head}");
    assert!(page.contains("did not come from this host"), "{page}");
    assert!(!head.contains("weft_session="), "{head}");
    let (status, _, _) = sign_in(Some(&csrf_cookie), "token=user-secret&csrf=0000");
    assert_eq!(status, 403);
    let (status, _, _) = sign_in(None, &format!("token=user-secret&csrf={csrf}"));
    assert_eq!(status, 403, "the value must match the cookie");
    // The token is checked here, not on the next page.
    let (status, head, page) = sign_in(Some(&csrf_cookie), &format!("token=wrong&csrf={csrf}"));
    assert_eq!(status, 401, "{head}");
    assert!(page.contains("does not accept that token"), "{page}");
    assert!(!head.contains("weft_session="), "{head}");
    // A token that could add cookie attributes is refused, and the form,
    // posted before any token is checked, is small.
    let (status, _, _) = sign_in(
        Some(&csrf_cookie),
        &format!("token=x%3B%20Domain%3Devil.example&csrf={csrf}"),
    );
    assert_eq!(status, 400);
    let mut big = format!("csrf={csrf}&token=");
    big.extend(std::iter::repeat_n('a', 8 << 10));
    let (status, head, page) = sign_in(Some(&csrf_cookie), &big);
    assert_eq!(status, 413);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(page.contains("larger than any token"), "{page}");
    let (status, head, _) = sign_in(
        Some(&csrf_cookie),
        &format!("token=user-secret&csrf={csrf}"),
    );
    assert_eq!(status, 303, "{head}");
    let session = cookie_named(&head, "weft_session");
    let set = head
        .lines()
        .find(|l| l.starts_with("set-cookie: weft_session="))
        .unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/ui"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "plaintext: {set}");
    assert!(!session.contains("user-secret"), "{session}");
    assert_eq!(session.len(), "weft_session=".len() + 64, "{session}");
    let (status, _, modules) =
        http_raw(&socket, "GET", "/ui/modules", &[("Cookie", &session)], b"");
    assert_eq!(status, 200);
    assert!(modules.contains("scenarios"), "{modules}");
    assert!(modules.contains("Sign out"), "{modules}");
    let (status, _, _) = http_raw(
        &socket,
        "GET",
        "/ui",
        &[("Cookie", "weft_token=user-secret")],
        b"",
    );
    assert_eq!(status, 303, "a token in a cookie is not a session");
    let (status, _, _) = http_raw(
        &socket,
        "GET",
        "/ui",
        &[("Cookie", "weft_session=wrong")],
        b"",
    );
    assert_eq!(
        status, 303,
        "an unknown session is sent back to the login page"
    );
    let (status, _, _) = http_raw(
        &socket,
        "GET",
        "/v1/workflows",
        &[("Cookie", &session)],
        b"",
    );
    assert_eq!(status, 401, "the cookie reads the UI's pages only");
    let (status, _, _) = http_raw(
        &socket,
        "POST",
        "/v1/workflows/x/terminate",
        &[("Cookie", &session)],
        b"",
    );
    assert_eq!(status, 401, "the cookie changes nothing");
    // Sign-out ends the session.
    let (status, head, _) = http_raw(&socket, "POST", "/ui/logout", &[("Cookie", &session)], b"");
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("location: /ui/login"), "{head}");
    assert!(head.contains("weft_session=; Path=/ui"), "{head}");
    let (status, head, _) = http_raw(&socket, "GET", "/ui/modules", &[("Cookie", &session)], b"");
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("location: /ui/login"), "{head}");
}

/// `name=value` of the response's `Set-Cookie` for cookie `name`.
fn cookie_named(head: &str, name: &str) -> String {
    head.lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .map(|c| c.split(';').next().unwrap())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no cookie {name} in {head}"))
        .to_owned()
}

/// The worker process `remote_worker_process_serves_the_activities` starts:
/// this test binary again, running only this function. It serves the
/// approval example's activities to the host at `WEFT_TEST_WORKER_ADDRESS`
/// until it is killed; the first credit check of each run fails, to be
/// retried by the workflow's policy.
#[test]
#[ignore = "the worker process of another test; it runs only when that test starts it"]
fn worker_process() {
    let Ok(address) = std::env::var("WEFT_TEST_WORKER_ADDRESS") else {
        return;
    };
    use weft::worker::{Worker, WorkerOptions};
    use weft::{Activities, ActivityContext, ActivityError};
    let mut activities = Activities::new();
    activities.register(
        "check_credit",
        |ctx: ActivityContext, req: Value| async move {
            println!(
                "check_credit {} attempt {}",
                req["applicant"],
                ctx.attempt()
            );
            if ctx.attempt() == 1 {
                return Err(ActivityError::retryable(
                    "BureauTimeout",
                    "the bureau did not answer",
                ));
            }
            Ok(json!({ "score": 712 }))
        },
    );
    activities.register("notify", |_: ActivityContext, req: Value| async move {
        println!("notify {} {}", req["applicant"], req["outcome"]);
        Ok::<_, ActivityError>(json!({ "sent": true }))
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let worker = Worker::connect(&address, WorkerOptions::default()).unwrap();
        worker
            .run(activities, std::future::pending())
            .await
            .unwrap();
    });
}

/// A workflow whose activities a separate worker process serves, driven
/// through the CLI and HTTP: deploy, start, query, signal, wait, show.
#[test]
fn remote_worker_process_serves_the_activities() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("weft.db");
    let host = HostProcess::start(&["dev", "--database", db.to_str().unwrap()], &[]);
    let addr = host.address.as_str();
    let socket = host.socket();
    let worker_log = dir.path().join("worker.log");
    let worker = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "worker_process", "--ignored", "--nocapture"])
        .env("WEFT_TEST_WORKER_ADDRESS", addr)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&worker_log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _worker = Kill(worker);

    let approval = guest_path("approval-workflow");
    weft(
        addr,
        &["deploy", approval.to_str().unwrap(), "--name", "approval"],
    )
    .ok();
    let input = r#"{"applicant": "Ada", "amount": 5000, "cooling_off_ms": 100, "decision_timeout_ms": 600000}"#;
    weft(
        addr,
        &["start", "approval", "--id", "loan-1", "--input", input],
    )
    .ok();
    // The first credit check fails in the worker and is retried a second later.
    let status = eventually("the run to wait for a decision", || {
        let s = weft(addr, &["query", "loan-1", "status", "--output", "json"]).json();
        (s["stage"] == "awaiting decision").then_some(s)
    });
    assert_eq!(status["score"], 712);
    // It waits on the decision's deadline, a timer; the activities are done.
    let described = weft(addr, &["describe", "loan-1", "--output", "json"]).json();
    let timers = described["pending_timers"].as_array().expect("a timer");
    assert_eq!(timers.len(), 1, "{described}");
    assert!(
        timers[0]["fire_at_ms"].as_u64().unwrap()
            > described["created_at_ms"].as_u64().unwrap() + 500_000,
        "{described}"
    );
    assert!(described.get("pending_activities").is_none(), "{described}");
    let text = weft(addr, &["describe", "loan-1"]);
    assert!(
        text.ok().contains("waiting on") && text.ok().contains("fires at"),
        "{text:?}"
    );
    let (_, _, page) = http_raw(&socket, "GET", "/ui/workflows/loan-1", &[], b"");
    assert!(
        page.contains("Waiting on") && page.contains("fires at"),
        "{page}"
    );
    assert!(
        page.contains(r#"http-equiv="refresh""#),
        "an open run's page reloads itself"
    );
    let (code, body) = http(
        &socket,
        "POST",
        "/v1/workflows/loan-1/signals/decision",
        None,
        br#"{"approved": true, "by": "Grace"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let run = weft(addr, &["wait", "loan-1", "--output", "json"]).json();
    assert_eq!(run["status"], "completed");
    assert_eq!(
        run["output"],
        json!({ "applicant": "Ada", "score": 712, "outcome": "approved", "decided_by": "Grace" })
    );
    let (code, history) = http(&socket, "GET", "/v1/workflows/loan-1/history", None, b"");
    assert_eq!(code, 200);
    assert_eq!(history["chain_verified"], true);
    let events = history["events"].as_array().unwrap();
    let attempts: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e["kind"] == "activity_completed")
        .map(|e| {
            (
                e["event"]["seq"].as_u64().unwrap(),
                e["event"]["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        attempts.len(),
        2,
        "check_credit and notify, once each: {attempts:?}"
    );
    assert_eq!(
        attempts[0].1, 2,
        "the credit check completed on its second attempt"
    );
    let log = std::fs::read_to_string(&worker_log).unwrap();
    assert!(log.contains("check_credit \"Ada\" attempt 2"), "{log}");
    assert!(log.contains("notify \"Ada\" \"approved\""), "{log}");
    let shown = weft(addr, &["show", "loan-1"]);
    assert!(shown.ok().contains("activity_completed"), "{shown:?}");
}

/// A remote worker finishes an activity while its host is down (killed with
/// -9): the worker keeps sending the completion until the restarted host
/// takes it, so the run closes at once with the one attempt, instead of
/// after the attempt's ten-minute lease with the activity run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_sent_while_the_host_restarts_is_delivered() {
    use std::sync::{Arc, Mutex};
    use weft::worker::{Worker, WorkerOptions};
    use weft::{Activities, ActivityContext, ActivityError};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("weft.db");
    let dev = ["dev", "--database", db.to_str().unwrap()];
    let mut host = HostProcess::start(&dev, &[]);
    let addr = host.address.clone();
    let listen = host.socket();
    let acts = guest_path("test-activities");
    weft(&addr, &["deploy", acts.to_str().unwrap(), "--name", "acts"]).ok();

    let started = Arc::new(Mutex::new(Vec::new()));
    let (release, released) = tokio::sync::watch::channel(false);
    let mut activities = Activities::new();
    {
        let started = started.clone();
        activities.register("charge", move |ctx: ActivityContext, _: Value| {
            let (started, mut released) = (started.clone(), released.clone());
            async move {
                started.lock().unwrap().push(ctx.attempt());
                let _ = released.wait_for(|go| *go).await;
                Ok::<_, ActivityError>(ctx.attempt())
            }
        });
    }
    let options = WorkerOptions {
        worker_id: "survivor".into(),
        max_concurrent: 1,
        poll_wait: std::time::Duration::from_secs(1),
        ..WorkerOptions::default()
    };
    let worker = Worker::connect(&addr, options).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(async move {
        worker
            .run(activities, async {
                let _ = stopped.await;
            })
            .await
    });

    let input = r#"{"activity": "charge", "start_to_close_ms": 600000}"#;
    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        weft(
            &a,
            &[
                "start", "call", "--module", "acts", "--id", "charge-1", "--input", input,
            ],
        )
        .ok();
    })
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while started.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker did not start the activity within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    host.kill();
    // The result is ready while no host listens: the worker's first sends fail.
    release.send(true).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let host = HostProcess::start_on(&listen, &dev, &[]);
    let a = host.address.clone();
    let run = tokio::task::spawn_blocking(move || {
        eventually("the run to close after the restart", || {
            let run = weft(&a, &["describe", "charge-1", "--output", "json"]).json();
            (run["status"] != "running").then_some(run)
        })
    })
    .await
    .unwrap();
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["output"], json!({ "ok": 1 }), "{run}");
    assert_eq!(
        *started.lock().unwrap(),
        [1],
        "the activity ran once: its completion was not lost"
    );
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(30), worker)
        .await
        .expect("the worker stops within 30 s")
        .expect("the worker task does not panic")
        .expect("the worker stops cleanly");
    drop(host);
}

#[test]
fn tokens_come_from_files_kept_out_of_the_process_list() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let admin = file("admin", "# the operators\nadmin-from-file\n");
    let user = file("user", "user-a, user-b\n\n");
    let client = file("client", "user-b\n");
    let clients = file("clients", "client-only\n");
    let workers = file("workers", "# payments\nworker-pay:charge+refund\n");
    let db = dir.path().join("weft.db");
    let host = HostProcess::start(
        &[
            "server",
            "--database",
            db.to_str().unwrap(),
            "--host-id",
            "token-files",
            "--admin-token-file",
            &admin,
            "--user-token-file",
            &user,
            "--client-token-file",
            &clients,
            "--worker-token-file",
            &workers,
        ],
        &[],
    );
    let addr = host.address.as_str();
    let listed = weft_env(
        addr,
        &["list", "--output", "json"],
        &[("WEFT_TOKEN_FILE", client.as_str())],
    );
    assert_eq!(listed.json(), json!({"runs": []}));
    let e = weft_env(
        addr,
        &["deploy", &scenarios(), "--name", "scenarios"],
        &[("WEFT_TOKEN_FILE", client.as_str())],
    );
    assert!(e.failed().contains("admin token"), "{e:?}");
    weft_env(
        addr,
        &["deploy", &scenarios(), "--name", "scenarios"],
        &[("WEFT_TOKEN", "admin-from-file")],
    )
    .ok();
    let e = weft_env(addr, &["list"], &[("WEFT_TOKEN", "# the operators")]);
    assert!(e.failed().contains("not one this host accepts"), "{e:?}");
    // A client token reads runs; a worker token does not.
    let listed = weft_env(
        addr,
        &["list", "--output", "json"],
        &[("WEFT_TOKEN", "client-only")],
    );
    assert_eq!(listed.json(), json!({"runs": []}));
    let e = weft_env(addr, &["list"], &[("WEFT_TOKEN", "worker-pay")]);
    assert!(e.failed().contains("a worker token may only poll"), "{e:?}");
}

/// `weft dev` takes its body limits from flags and the environment, and
/// each refusal names the limit and the setting.
#[test]
fn body_limits_are_set_by_flag_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("weft.db");
    let db = db.to_str().unwrap();
    let refused = weft(
        "http://127.0.0.1:1",
        &["dev", "--database", db, "--max-request-bytes", "10"],
    );
    assert!(
        refused
            .failed()
            .contains("--max-request-bytes 10 is too small"),
        "{refused:?}"
    );
    let host = HostProcess::start(
        &["dev", "--database", db, "--max-request-bytes", "2048"],
        &[("WEFT_MAX_MODULE_BYTES", "4096")],
    );
    let socket = host.socket();
    let (status, body) = http(&socket, "POST", "/v1/workflows", None, &[b' '; 3000]);
    assert_eq!(status, 413, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("limit of 2048 bytes"), "{message}");
    assert!(message.contains("--max-request-bytes"), "{message}");
    assert_eq!(body["error"]["retryable"], json!(false));
    let (status, body) = http(&socket, "PUT", "/v1/modules/m", None, &[0; 5000]);
    assert_eq!(status, 413, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("limit of 4096 bytes"), "{message}");
    assert!(message.contains("WEFT_MAX_MODULE_BYTES"), "{message}");
    // Under the limits: answered as ever.
    let (status, body) = http(&socket, "PUT", "/v1/modules/m", None, &[0; 3000]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], json!("invalid_argument"));
}
