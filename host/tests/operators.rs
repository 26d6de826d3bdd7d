//! Operators end to end: the real `weft` binary as a dev host, driven
//! through the CLI as in the README's walk-through. Three versions of
//! `order` (`test-versions-v1..3`): v2 would diverge from v1's runs, v3 would
//! not. The host has no activities registered, so every run waits on its
//! first activity, `reserve`: open runs with a recorded command to check.

mod process;

use process::{HostProcess, eventually, guest_path, weft};
use serde_json::{Value, json};

fn version(v: u32) -> String {
    guest_path(&format!("test-versions-v{v}"))
        .to_str()
        .unwrap()
        .to_owned()
}

fn start(addr: &str, id: &str) -> Value {
    weft(
        addr,
        &[
            "start",
            "order",
            "--id",
            id,
            "--input",
            &format!("{id:?}"),
            "--output",
            "json",
        ],
    )
    .json()
}

/// Waits until the run has recorded its first command (`reserve` scheduled).
fn scheduled(addr: &str, id: &str) {
    eventually("the run to schedule reserve", || {
        let shown = weft(addr, &["show", id, "--output", "json"]).json();
        let events = shown["events"].as_array()?;
        events
            .iter()
            .any(|e| e["kind"] == json!("activity_scheduled"))
            .then_some(())
    });
}

#[test]
fn deploy_check_upgrade_and_collect_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("weft.db");
    let host = HostProcess::start(&["dev", "--database", db.to_str().unwrap()], &[]);
    let addr = host.address.as_str();

    let out = weft(
        addr,
        &["deploy", &version(1), "--name", "order", "--version", "1"],
    );
    assert!(
        out.ok().contains("new runs of order take version 1"),
        "{out:?}"
    );
    let first = start(addr, "o-1");
    start(addr, "o-2");
    scheduled(addr, "o-1");
    scheduled(addr, "o-2");

    // A checked deploy of v2 stores it but keeps v1 the default: exit code 3.
    let refused = weft(
        addr,
        &[
            "deploy",
            &version(2),
            "--name",
            "order",
            "--version",
            "2",
            "--check",
        ],
    );
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(
        refused.stdout.contains("open run o-1 diverges at event 3"),
        "{refused:?}"
    );
    assert!(
        refused.stderr.contains("NOT made the default"),
        "{refused:?}"
    );

    // `weft check` says the same per run, and passes v3.
    let check = weft(addr, &["check", &version(2), "--name", "order"]);
    assert_eq!(check.code, 3, "{check:?}");
    assert!(check.stdout.contains("o-2"), "{check:?}");
    assert!(
        check
            .stdout
            .contains("2 runs of order: 0 replay identically, 2 diverge"),
        "{check:?}"
    );
    let check = weft(
        addr,
        &["check", &version(3), "--name", "order", "--output", "json"],
    )
    .json();
    assert_eq!(check["identical"], json!(2), "{check}");
    assert_eq!(check["runs"][0]["verdict"], json!("identical"));

    // v3 deployed beside them, then made the default after a check.
    weft(
        addr,
        &[
            "deploy",
            &version(3),
            "--name",
            "order",
            "--version",
            "3",
            "--no-default",
        ],
    )
    .ok();
    let promoted = weft(
        addr,
        &[
            "modules", "default", "order", "3", "--check", "--output", "json",
        ],
    )
    .json();
    assert_eq!(promoted["is_default"], json!(true), "{promoted}");
    let on_v3 = start(addr, "o-3");
    assert_ne!(on_v3["module_sha256"], first["module_sha256"]);

    // Upgrade: both v1 runs move; the listing counts them under v3.
    let dry = weft(addr, &["upgrade", "order", "--to", "3", "--dry-run"]);
    assert!(dry.ok().contains("2 would move"), "{dry:?}");
    let moved = weft(addr, &["upgrade", "order", "--to", "3", "--output", "json"]).json();
    let results: Vec<&str> = moved
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["result"].as_str().unwrap())
        .collect();
    assert_eq!(
        results.iter().filter(|r| **r == "upgraded").count(),
        2,
        "{moved}"
    );
    let modules = weft(addr, &["modules", "list", "--output", "json"]).json();
    let by_version = |v: &str| {
        modules
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["version"] == json!(v))
            .cloned()
            .unwrap()
    };
    assert_eq!(by_version("1")["open_runs"], json!(0), "{modules}");
    assert_eq!(by_version("3")["open_runs"], json!(3), "{modules}");
    assert_eq!(by_version("3")["is_default"], json!(true));
    // Which runs use a module: by name and version, and by sha256.
    let on_v3 = weft(
        addr,
        &[
            "list",
            "--module",
            "order",
            "--version",
            "3",
            "--output",
            "json",
        ],
    )
    .json();
    assert_eq!(on_v3["runs"].as_array().unwrap().len(), 3, "{on_v3}");
    let sha = by_version("1")["sha256"].as_str().unwrap().to_owned();
    let on_v1 = weft(addr, &["list", "--module", &sha, "--output", "json"]).json();
    assert_eq!(on_v1["runs"].as_array().unwrap().len(), 0, "{on_v1}");
    let vague = weft(addr, &["list", "--module", "order"]);
    assert_ne!(vague.code, 0);
    assert!(vague.stderr.contains("needs --version"), "{vague:?}");
    let shown = weft(addr, &["show", "o-1", "--output", "json"]).json();
    assert!(
        shown["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == json!("module_changed")),
        "{shown}"
    );
    let replayed = weft(addr, &["replay", "o-1"]);
    assert!(
        replayed.ok().contains("replays identically"),
        "{replayed:?}"
    );

    // The module bytes come back for an offline replay.
    let copy = dir.path().join("v3.wasm");
    weft(
        addr,
        &["modules", "get", "order", "3", "-o", copy.to_str().unwrap()],
    )
    .ok();
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(version(3)).unwrap()
    );

    // Nothing closed yet: garbage collection keeps every run; v2 has no run
    // but was deployed just now, within the retention.
    let gc = weft(
        addr,
        &[
            "modules",
            "gc",
            "--retention",
            "1h",
            "--dry-run",
            "--output",
            "json",
        ],
    )
    .json();
    assert_eq!(gc["runs"], json!(0), "{gc}");
    let gc = weft(
        addr,
        &["modules", "gc", "--retention", "0s", "--output", "json"],
    )
    .json();
    let gone: Vec<&str> = gc["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["version"].as_str().unwrap())
        .collect();
    assert_eq!(gone, vec!["1", "2"], "{gc}");

    // Reset: o-2 starts over after its upgrade; the old run is terminated.
    let wrong = weft(addr, &["reset", "o-2", "--to-event", "1"]);
    assert!(wrong.failed().contains("events 3, 4"), "{wrong:?}");
    let reset = weft(
        addr,
        &[
            "reset",
            "o-2",
            "--to-event",
            "4",
            "--reapply-exclude",
            "signals,updates",
        ],
    );
    assert!(
        reset.ok().contains(
            "4 events kept, 0 signal(s) and 0 update(s) queued again; the old run was terminated"
        ),
        "{reset:?}"
    );
    let runs = weft(addr, &["list", "--output", "json"]).json();
    let o2: Vec<&str> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["workflow_id"] == json!("o-2"))
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(o2, vec!["running", "terminated"], "{runs}");

    // Resume is for stuck runs only.
    let resume = weft(addr, &["resume", "o-1"]);
    assert!(resume.failed().contains("not stuck"), "{resume:?}");
}
