//! Auditing: a real run's export verifies, and every way of tampering with
//! it is caught at the right event; offline replay proves what it did; and
//! the same through the `weft` binary.

mod common;
mod process;

use common::{Backend, Calls, fresh_db, guest};
use serde_json::{Value, json};
use weft::audit::{self, AuditError};
use weft::model::RunId;
use weft::model::{Event, EventHash};
use weft::testing::TestEnv;
use weft::workflow::ReplayVerdict;
use weft::{Activities, ActivityContext, ActivityError, Host, HostConfig};

/// `order` v1 run to completion: 12 events. Returns the export's JSON.
async fn completed_order_export() -> String {
    completed_order_export_signed(None).await
}

/// The same, by a host that signs heads with `signer`.
async fn completed_order_export_signed(signer: Option<audit::Signer>) -> String {
    let db = fresh_db(Backend::Sqlite).await;
    let (env, run) = completed_order(&db, signer).await;
    if env.host().config().signer.is_some() {
        // The host's seal loop seals the run moments after the close; this
        // does the same now (whichever comes first, the first seal stays).
        env.host().seal_closed_runs(10).await.unwrap();
        assert!(env.host().store().seal(&run).await.unwrap().is_some());
        assert_eq!(env.host().seal_closed_runs(10).await.unwrap(), 0);
        assert!(
            env.host()
                .metrics_text()
                .lines()
                .any(|l| l == "weft_runs_sealed_total 1"),
            "{}",
            env.host().metrics_text()
        );
    }
    let export = env.host().export(&run).await.unwrap();
    assert_eq!(export.module.name, "order");
    env.shutdown().await;
    db.drop().await;
    export.to_json()
}

/// `order` v1 run to completion on `db` by a host that signs with `signer`.
async fn completed_order(db: &common::Db, signer: Option<audit::Signer>) -> (TestEnv, RunId) {
    let calls = Calls::default();
    let mut activities = Activities::new();
    for name in ["reserve", "ship"] {
        let c = calls.clone();
        activities.register(name, move |_: ActivityContext, input: String| {
            let c = c.clone();
            async move {
                c.record(format!("{name}:{input}"));
                Ok::<_, ActivityError>(format!("{name}d {input}"))
            }
        });
    }
    let env = TestEnv::builder(activities)
        .store(db.store.clone())
        .engine(common::engine())
        .config(|c| c.signer = signer)
        .build()
        .await
        .unwrap();
    let module = env
        .deploy("order", &guest("test-versions-v1"))
        .await
        .unwrap();
    let run = env
        .start(&module, "order", "order-7", "book")
        .await
        .unwrap();
    let out: String = env.output(&run).await.unwrap();
    assert_eq!(out, "shipd reserved book");
    (env, run)
}

/// A closed history altered in the database before a signing host saw it
/// is not sealed: the seal loop checks the chain first, and counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_altered_before_its_seal_is_not_sealed() {
    let db = fresh_db(Backend::Sqlite).await;
    let (env, run) = completed_order(&db, None).await;
    env.shutdown().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.url))
        .await
        .unwrap();
    let edited = sqlx::query(
        "UPDATE events SET payload = replace(payload, '\"book\"', '\"yacht\"') WHERE run_id = $1 AND seq = 1",
    )
    .bind(run.as_str())
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(edited.rows_affected(), 1);
    pool.close().await;

    let config = HostConfig {
        signer: Some(audit::Signer::generate().unwrap()),
        ..HostConfig::default()
    };
    let sealer = Host::new(db.store.clone(), Activities::new(), config).unwrap();
    assert_eq!(sealer.seal_closed_runs(10).await.unwrap(), 0);
    assert_eq!(db.store.seal(&run).await.unwrap(), None);
    assert!(
        sealer
            .metrics_text()
            .lines()
            .any(|l| l == "weft_unsealable_runs_total 1"),
        "{}",
        sealer.metrics_text()
    );

    // The seal loop tries it once, not at every poll: logged and counted once.
    let config = HostConfig {
        signer: Some(audit::Signer::generate().unwrap()),
        poll_interval: std::time::Duration::from_millis(10),
        ..HostConfig::default()
    };
    let looping = Host::new(db.store.clone(), Activities::new(), config).unwrap();
    let running = looping.run().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let metrics = looping.metrics_text();
    running.shutdown().await;
    assert!(
        metrics.lines().any(|l| l == "weft_unsealable_runs_total 1"),
        "{metrics}"
    );
    assert_eq!(db.store.seal(&run).await.unwrap(), None);
    db.drop().await;
}

fn edit(text: &str, change: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(text).unwrap();
    change(&mut v);
    serde_json::to_string_pretty(&v).unwrap()
}

fn events(v: &mut Value) -> &mut Vec<Value> {
    v["events"].as_array_mut().unwrap()
}

/// Recomputes every hash and the head after an edit: a forger's export.
fn rechain(v: &mut Value) {
    let mut prev = EventHash::GENESIS;
    for e in events(v).iter_mut() {
        let seq = e["seq"].as_u64().unwrap();
        let at = e["recorded_at_ms"].as_u64().unwrap();
        let event =
            Event::from_parts(e["kind"].as_str().unwrap(), &e["payload"].to_string()).unwrap();
        prev = EventHash::chain(&prev, seq, event.kind(), at, &event.payload_json());
        e["hash"] = json!(prev.to_hex());
    }
    v["head"] = json!(prev.to_hex());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_caught_at_the_event_it_touched() {
    let text = completed_order_export().await;
    let verified = audit::verify(&text).unwrap();
    assert_eq!(verified.events, 12);

    // An edited payload: the activity's output (event 5).
    let edited = edit(&text, |v| {
        events(v)[4]["payload"]["output"] = json!("forged")
    });
    assert!(
        matches!(audit::verify(&edited), Err(AuditError::Altered { seq: 5, ref kind, .. }) if kind == "activity_completed"),
        "{:?}",
        audit::verify(&edited)
    );
    // A field the event does not have.
    let added = edit(&text, |v| {
        events(v)[2]["payload"]["approved_by"] = json!("mallory");
    });
    assert!(matches!(
        audit::verify(&added),
        Err(AuditError::Altered { seq: 3, .. })
    ));
    // A deleted event.
    let deleted = edit(&text, |v| {
        events(v).remove(3);
    });
    assert_eq!(
        audit::verify(&deleted),
        Err(AuditError::Missing {
            expected: 4,
            found: 5
        })
    );
    // Two swapped events.
    let swapped = edit(&text, |v| events(v).swap(2, 3));
    assert_eq!(
        audit::verify(&swapped),
        Err(AuditError::Reordered {
            expected: 3,
            found: 4
        })
    );
    // An edited hash.
    let hash = edit(&text, |v| {
        events(v)[6]["hash"] = json!(EventHash([7; 32]).to_hex());
    });
    assert!(matches!(
        audit::verify(&hash),
        Err(AuditError::Altered { seq: 7, .. })
    ));
    // The end cut off: the count says so; with the count fixed, the head does.
    let cut = edit(&text, |v| {
        events(v).pop();
    });
    assert!(matches!(
        audit::verify(&cut),
        Err(AuditError::Count {
            stated: 12,
            held: 11
        })
    ));
    let cut_and_counted = edit(&cut, |v| v["event_count"] = json!(11));
    assert!(matches!(
        audit::verify(&cut_and_counted),
        Err(AuditError::Head { .. })
    ));
    // Not an export at all.
    assert!(matches!(
        audit::verify("{\"events\": []}"),
        Err(AuditError::Malformed(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_replay_proves_what_the_run_did() {
    let text = completed_order_export().await;
    let v1 = guest("test-versions-v1");
    let replayed = audit::replay_offline(&v1, &text).await.unwrap();
    assert!(
        matches!(
            replayed.verdict,
            ReplayVerdict::Identical { events: 12, .. }
        ),
        "{replayed:?}"
    );
    let said = replayed.verdict_text();
    assert!(
        said.contains("replays identically: 12 events, the workflow ends completed with \"shipd reserved book\""),
        "{said}"
    );

    // Another module is refused, naming both hashes and the one to fetch.
    let wrong = audit::replay_offline(&guest("test-versions-v3"), &text)
        .await
        .unwrap_err();
    assert!(matches!(wrong, AuditError::WrongModule { .. }), "{wrong}");
    let said = wrong.to_string();
    assert!(
        said.contains(weft::model::Sha256Hex::of(&v1).as_str()),
        "{said}"
    );
    assert!(said.contains("weft modules get order "), "{said}");

    // A forger who re-chains every hash gets past `verify`, not past replay:
    // the module never scheduled that activity.
    let forged = edit(&text, |v| {
        events(v)[2]["payload"]["name"] = json!("refund");
        rechain(v);
    });
    audit::verify(&forged).expect("a re-chained export is self-consistent");
    let caught = audit::replay_offline(&v1, &forged).await.unwrap();
    let ReplayVerdict::Diverged(d) = &caught.verdict else {
        panic!("{caught:?}")
    };
    assert_eq!(d.event_seq, 3, "{d}");

    // ...nor past a head kept outside the host: the original's event 3 hash
    // is nowhere in the forgery, while event 2 (before the edit) still is.
    let (original, _) = audit::verify_export(&text).unwrap();
    let (forgery, _) = audit::verify_export(&forged).unwrap();
    let kept = |seq: usize| original.events[seq - 1].hash;
    assert_eq!(audit::anchored(&original, &kept(3)), Ok(3));
    assert_eq!(audit::anchored(&forgery, &kept(2)), Ok(2));
    assert!(matches!(
        audit::anchored(&forgery, &kept(3)),
        Err(AuditError::Unanchored { .. })
    ));
}

/// A signing host's export proves its origin with the public key alone: a
/// forger who edits and re-chains it keeps a valid chain but breaks the
/// signature; another host's key, or a stripped signature, is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_export_proves_which_host_wrote_it() {
    let signer = audit::Signer::generate().unwrap();
    let key = signer.public_key();
    let text = completed_order_export_signed(Some(signer.clone())).await;
    let (export, _) = audit::verify_export(&text).unwrap();
    assert_eq!(export.signature.as_ref().unwrap().public_key, key);
    let seal = export.seal.clone().expect("the closed run is sealed");
    assert_eq!(
        (seal.event_count, seal.head),
        (export.event_count, export.head)
    );
    audit::check_signature(&export, &key).unwrap();
    audit::check_signature(&export, &key.to_ascii_uppercase()).unwrap();

    // Edited and re-chained: the chain verifies, the signature does not.
    let forged = edit(&text, |v| {
        events(v)[0]["payload"]["input"] = json!("yacht");
        rechain(v);
    });
    let (forged, _) = audit::verify_export(&forged).expect("a re-chained export is consistent");
    assert_eq!(
        audit::check_signature(&forged, &key),
        Err(AuditError::BadSignature)
    );
    // Cut short and re-headed (and the run said open, as the shorter
    // chain is): the count and head are signed too.
    let cut = edit(&text, |v| {
        events(v).pop();
        let n = events(v).len();
        v["event_count"] = json!(n);
        v["run"]["status"] = json!("running");
        v["run"].as_object_mut().unwrap().remove("output");
        rechain(v);
    });
    let (cut, _) = audit::verify_export(&cut).unwrap();
    assert_eq!(
        audit::check_signature(&cut, &key),
        Err(AuditError::BadSignature)
    );

    let other = audit::Signer::generate().unwrap().public_key();
    assert!(matches!(
        audit::check_signature(&export, &other),
        Err(AuditError::WrongSigner { .. })
    ));
    let stripped = edit(&text, |v| {
        v.as_object_mut().unwrap().remove("signature");
    });
    let (stripped, _) = audit::verify_export(&stripped).unwrap();
    assert_eq!(
        audit::check_signature(&stripped, &key),
        Err(AuditError::Unsigned)
    );
    assert!(matches!(
        audit::check_signature(&export, "not-a-key"),
        Err(AuditError::BadKey(_))
    ));

    // The database edited after the close and re-chained: the host signs what
    // it is given at export, but the seal it made at the close does not match.
    let resigned = edit(&text, |v| {
        events(v)[0]["payload"]["input"] = json!("yacht");
        rechain(v);
        let count = v["event_count"].as_u64().unwrap();
        let head = EventHash::from_hex(v["head"].as_str().unwrap()).unwrap();
        let run_id = v["run"]["run_id"].as_str().unwrap().to_owned();
        v["signature"] = serde_json::to_value(signer.sign_head(&run_id, count, &head)).unwrap();
    });
    let (resigned, _) = audit::verify_export(&resigned).unwrap();
    let broken = audit::check_signature(&resigned, &key).unwrap_err();
    assert!(matches!(broken, AuditError::SealBroken { .. }), "{broken}");
    assert!(
        broken.to_string().contains("after the run closed"),
        "{broken}"
    );
    // A seal that claims fewer events: its signature no longer matches.
    let short = edit(&text, |v| v["seal"]["event_count"] = json!(3));
    let (short, _) = audit::verify_export(&short).unwrap();
    assert!(matches!(
        audit::check_signature(&short, &key),
        Err(AuditError::SealBroken { .. })
    ));
    // No seal on a closed run: removed from the database, or not yet made.
    let unsealed = edit(&text, |v| {
        v.as_object_mut().unwrap().remove("seal");
    });
    let (unsealed, _) = audit::verify_export(&unsealed).unwrap();
    assert_eq!(
        audit::check_signature(&unsealed, &key),
        Err(AuditError::Unsealed {
            status: "completed".into()
        })
    );
}

#[test]
fn auditors_export_verify_and_replay_through_the_cli() {
    use process::{HostProcess, eventually, guest_path, weft};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("weft.db");
    let key_file = dir.path().join("host.key");
    let key_file = key_file.to_str().unwrap();
    let made = weft(
        "http://127.0.0.1:9",
        &["keygen", "-o", key_file, "--output", "json"],
    )
    .json();
    let public_key = made["public_key"].as_str().unwrap().to_owned();
    let again = weft("http://127.0.0.1:9", &["keygen", "-o", key_file]);
    assert!(again.failed().contains("exists"), "{again:?}");
    let host = HostProcess::start(
        &[
            "dev",
            "--database",
            db.to_str().unwrap(),
            "--signing-key",
            key_file,
        ],
        &[],
    );
    let addr = host.address.as_str();
    let v1 = guest_path("test-versions-v1");
    let v1 = v1.to_str().unwrap();
    weft(addr, &["deploy", v1, "--name", "order", "--version", "1"]).ok();
    weft(
        addr,
        &["start", "order", "--id", "audit-1", "--input", "\"book\""],
    )
    .ok();
    // No activity is registered: the run waits, having scheduled `reserve`.
    eventually("reserve to be scheduled", || {
        let shown = weft(addr, &["show", "audit-1", "--output", "json"]).json();
        (shown["events"].as_array()?.len() >= 3).then_some(())
    });

    let file = dir.path().join("run.json");
    let file = file.to_str().unwrap();
    let out = weft(addr, &["export", "audit-1", "-o", file]);
    assert!(out.stderr.contains("exported run"), "{out:?}");
    let ok = weft(addr, &["verify", file, "--against-host"]);
    assert!(ok.ok().contains("3 events, hash chain verified"), "{ok:?}");
    weft(addr, &["verify", "audit-1"]).ok();
    // A head kept elsewhere: the export must contain it.
    let head = weft(addr, &["verify", file, "--output", "json"]).json()["head"]
        .as_str()
        .unwrap()
        .to_owned();
    let anchored = weft(addr, &["verify", file, "--head", &head]);
    assert!(
        anchored.ok().contains("the given head is event 3's hash"),
        "{anchored:?}"
    );
    // Signed by the host: the public key alone proves where it came from.
    let signed = weft(
        "http://127.0.0.1:9",
        &["verify", file, "--public-key", &public_key],
    );
    assert!(signed.ok().contains("the head is signed by"), "{signed:?}");
    let other = weft(
        "http://127.0.0.1:9",
        &["verify", file, "--public-key", &"cd".repeat(32)],
    );
    assert_eq!(other.code, 4, "{other:?}");
    let elsewhere = weft(addr, &["verify", file, "--head", &"ab".repeat(32)]);
    assert_eq!(elsewhere.code, 4, "{elsewhere:?}");
    assert!(
        elsewhere.stderr.contains("no event has the hash"),
        "{elsewhere:?}"
    );

    // Offline: no address needed, nothing contacted.
    let offline = weft(
        "http://127.0.0.1:9",
        &["replay", "--history", file, "--module", v1],
    );
    assert!(
        offline
            .ok()
            .contains("replays identically: 3 events, the workflow ends still running"),
        "{offline:?}"
    );

    // Tampered: the input in event 1.
    let text = std::fs::read_to_string(file).unwrap();
    std::fs::write(file, text.replacen("\"book\"", "\"yacht\"", 1)).unwrap();
    let broken = weft(addr, &["verify", file]);
    assert_eq!(broken.code, 4, "{broken:?}");
    assert!(
        broken
            .stderr
            .contains("event 1 (workflow_started) was altered"),
        "{broken:?}"
    );
    let refused = weft(
        "http://127.0.0.1:9",
        &["replay", "--history", file, "--module", v1],
    );
    assert_eq!(refused.code, 4, "{refused:?}");

    // Closed: the host seals the run, and an export carries the seal.
    weft(addr, &["terminate", "audit-1"]).ok();
    let sealed = dir.path().join("sealed.json");
    let sealed = sealed.to_str().unwrap();
    eventually("the closed run to be sealed", || {
        let out = weft(addr, &["export", "audit-1", "-o", sealed]);
        out.stderr.contains(", sealed").then_some(())
    });
    let checked = weft(
        "http://127.0.0.1:9",
        &["verify", sealed, "--public-key", &public_key],
    );
    assert!(
        checked.ok().contains("sealed when the run closed"),
        "{checked:?}"
    );
}

/// Runs `sql` (with the run id as `$1`) on the test's database, as someone
/// with write access to it would; returns the rows it changed.
async fn tamper(db: &common::Db, sql: &'static str, run: &RunId) -> u64 {
    match &db.schema {
        None => {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.url))
                .await
                .unwrap();
            let n = sqlx::query(sql)
                .bind(run.as_str())
                .execute(&pool)
                .await
                .unwrap()
                .rows_affected();
            pool.close().await;
            n
        }
        Some(schema) => {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SET search_path = \"{schema}\""
            )))
            .execute(&mut c)
            .await
            .unwrap();
            let n = sqlx::query(sql)
                .bind(run.as_str())
                .execute(&mut c)
                .await
                .unwrap()
                .rows_affected();
            c.close().await.unwrap();
            n
        }
    }
}

/// Attack 1: a closed, sealed run's export with its status rewritten to
/// `running` and its seal removed. The events end in a closing event, so
/// the status is refused (naming it and the event), and a closed history
/// without a seal is refused with the public key even where no one
/// checked the `run` section.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_run_cannot_be_passed_off_as_open() {
    let signer = audit::Signer::generate().unwrap();
    let key = signer.public_key();
    let text = completed_order_export_signed(Some(signer)).await;
    let reopened = edit(&text, |v| {
        v["run"]["status"] = json!("running");
        v["run"].as_object_mut().unwrap().remove("output");
        v.as_object_mut().unwrap().remove("seal");
    });
    let e = audit::verify_export(&reopened).unwrap_err();
    assert!(
        matches!(&e, AuditError::RunDiffers { field, .. } if field == "run.status"),
        "{e}"
    );
    let said = e.to_string();
    assert!(
        said.contains("\"running\"") && said.contains("\"completed\" (event 12 closes the run)"),
        "{said}"
    );

    // The same forgery handed straight to the signature check.
    let (export, _) = audit::verify_export(&text).unwrap();
    let mut forged = export.clone();
    forged.run.status = "running".into();
    forged.seal = None;
    let e = audit::check_signature(&forged, &key).unwrap_err();
    assert!(
        matches!(&e, AuditError::RunDiffers { field, .. } if field == "run.status"),
        "{e}"
    );
    assert!(e.to_string().contains("workflow_completed"), "{e}");
    forged.run.status = "stuck".into();
    assert!(audit::check_signature(&forged, &key).is_err());
    forged.run.status = "completed".into();
    assert_eq!(
        audit::check_signature(&forged, &key),
        Err(AuditError::Unsealed {
            status: "completed".into()
        })
    );
}

/// Attack 2: an export whose `run` section is rewritten (the output, and
/// every other field a reader is shown) no longer verifies, naming the
/// field and both values; offline replay refuses it too, and on the real
/// export reports the output the replay itself computed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_section_must_agree_with_the_events() {
    let signer = audit::Signer::generate().unwrap();
    let key = signer.public_key();
    let text = completed_order_export_signed(Some(signer)).await;
    let (export, _) = audit::verify_export(&text).unwrap();
    audit::check_signature(&export, &key).unwrap();

    let forged = edit(&text, |v| v["run"]["output"] = json!("a yacht"));
    let e = audit::verify_export(&forged).unwrap_err();
    assert_eq!(
        e,
        AuditError::RunDiffers {
            field: "run.output".into(),
            stated: "\"a yacht\"".into(),
            chained: "\"shipd reserved book\"".into(),
        }
    );
    let v1 = guest("test-versions-v1");
    assert_eq!(audit::replay_offline(&v1, &forged).await.unwrap_err(), e);

    type Edit = (&'static str, fn(&mut Value));
    let edits: [Edit; 6] = [
        ("run.workflow_id", |v| {
            v["run"]["workflow_id"] = json!("order-8")
        }),
        ("run.workflow_type", |v| {
            v["run"]["workflow_type"] = json!("refund")
        }),
        ("module.sha256", |v| {
            v["module"]["sha256"] = json!("ab".repeat(32))
        }),
        ("run.status", |v| v["run"]["status"] = json!("failed")),
        ("run.failure", |v| {
            v["run"]["failure"] = json!({"error_type": "X", "message": "y"})
        }),
        ("run.result", |v| v["run"]["result"] = json!("a yacht")),
    ];
    for (field, change) in edits {
        let e = audit::verify_export(&edit(&text, change)).unwrap_err();
        assert!(
            matches!(&e, AuditError::RunDiffers { field: f, .. } if f == field),
            "{field}: {e}"
        );
    }
    // Output removed from a completed run: also a difference.
    let removed = edit(&text, |v| {
        v["run"].as_object_mut().unwrap().remove("output");
    });
    assert!(audit::verify_export(&removed).is_err());

    let replayed = audit::replay_offline(&v1, &text).await.unwrap();
    assert_eq!(replayed.output, Some(json!("shipd reserved book")));
}

/// Attack 3, on both backends: the `runs` row edited in the database
/// (output, status) changes nothing a reader is shown, since the closing
/// event is read; and the closing event edited is refused, not shown, and
/// its export is not signed.
async fn a_runs_row_edited_in_the_database_changes_nothing_shown(backend: Backend) {
    let db = fresh_db(backend).await;
    let signer = audit::Signer::generate().unwrap();
    let key = signer.public_key();
    let (env, run) = completed_order(&db, Some(signer)).await;
    let host = env.host();
    host.seal_closed_runs(10).await.unwrap();
    let real = json!("shipd reserved book");

    let n = tamper(
        &db,
        "UPDATE runs SET output = '\"a yacht\"' WHERE run_id = $1",
        &run,
    )
    .await;
    assert_eq!(n, 1);
    let described = host.describe(&run).await.unwrap();
    assert_eq!(described.output.as_ref(), Some(&real));
    assert_eq!(
        weft::outcome(&host.wait(&run).await.unwrap()),
        Ok(real.clone())
    );
    // The same through the service (what `weft describe`, `weft wait`,
    // `weft export` and GET …/result ask).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(weft::api::serve(
        host.clone(),
        listener,
        weft::api::Tokens::open(),
        async move {
            let _ = stopped.await;
        },
    ));
    let client = weft::client::Client::connect(&address, None).await.unwrap();
    let id = Some(run.as_str());
    let view = client.describe("order-7", id).await.unwrap();
    assert_eq!(view.output.as_ref(), Some(&real));
    let view = client.await_result("order-7", id, None).await.unwrap();
    assert_eq!(view.output.as_ref(), Some(&real));
    let exported = client.export("order-7", id).await.unwrap().to_json();
    let (exported, _) = audit::verify_export(&exported).unwrap();
    assert_eq!(exported.run.output.as_ref(), Some(&real));
    audit::check_signature(&exported, &key).unwrap();
    let text = host.export(&run).await.unwrap().to_json();
    assert!(!text.contains("a yacht"), "{text}");
    let (export, _) = audit::verify_export(&text).unwrap();
    assert_eq!(export.run.output.as_ref(), Some(&real));
    audit::check_signature(&export, &key).unwrap();

    tamper(
        &db,
        "UPDATE runs SET status = 'failed', output = NULL WHERE run_id = $1",
        &run,
    )
    .await;
    let described = host.describe(&run).await.unwrap();
    assert_eq!(
        (described.status, described.output.as_ref()),
        (weft::RunStatus::Completed, Some(&real))
    );
    assert_eq!(
        weft::outcome(&host.wait(&run).await.unwrap()),
        Ok(real.clone())
    );
    let (export, _) = audit::verify_export(&host.export(&run).await.unwrap().to_json()).unwrap();
    assert_eq!(export.run.status, "completed");

    // The closing event itself edited: refused, naming the event.
    let n = tamper(
        &db,
        "UPDATE events SET payload = replace(payload, 'shipd', 'yacht') WHERE run_id = $1 AND seq = 12",
        &run,
    )
    .await;
    assert_eq!(n, 1);
    let e = host.describe(&run).await.unwrap_err().to_string();
    assert!(
        e.contains("last event 12 (workflow_completed) does not match its hash"),
        "{e}"
    );
    let export = host.export(&run).await.unwrap();
    assert_eq!(export.signature, None, "a broken chain is not signed");
    assert!(audit::verify(&export.to_json()).is_err());
    let served = client.history("order-7", id).await.unwrap();
    assert!(!served.chain_verified);
    assert_eq!(served.signature, None, "a broken chain is not signed");
    let e = client.describe("order-7", id).await.unwrap_err();
    assert!(e.to_string().contains("does not match its hash"), "{e}");
    let _ = stop.send(());
    env.shutdown().await;
    db.drop().await;
}

both_backends!(a_runs_row_edited_in_the_database_changes_nothing_shown);
