//! The wasm layer alone, no store: real guest components load, link only
//! allowed imports, and answer activations with the expected commands.

mod common;

use serde_json::json;
use weft::model::{Command, GuestStatus, Job, RunId};
use weft::wasm::{Instance, InstanceOptions, RunInfo};

fn options() -> InstanceOptions {
    InstanceOptions {
        run_id: RunId::from("engine-test"),
        seed: 42,
        info: RunInfo {
            workflow_id: "engine-test".into(),
            workflow_type: "hello".into(),
            parent_workflow_id: None,
        },
        recorded_patches: Default::default(),
    }
}

#[tokio::test]
async fn a_hello_activation_issues_one_activity_and_completes_on_its_result() {
    let engine = common::engine();
    let module = engine.load(&common::guest("hello-workflow")).unwrap();
    let mut instance = Instance::new(&engine, &module, options()).await.unwrap();
    instance.set_time(common::START_MS, false);
    let first = instance.start("hello", &json!("Ada")).await.unwrap();
    assert_eq!(first.status, GuestStatus::Pending);
    match first.commands.as_slice() {
        [
            Command::ScheduleActivity {
                seq: 1,
                name,
                input,
                ..
            },
        ] => {
            assert_eq!(name, "greet");
            assert_eq!(input, &json!("Ada"));
        }
        other => panic!("expected one greet activity, got {other:?}"),
    }
    let second = instance
        .deliver(&[Job::ActivityResolved {
            seq: 1,
            outcome: Ok(json!("Hello, Ada!")),
        }])
        .await
        .unwrap();
    assert_eq!(second.status, GuestStatus::Completed(json!("Hello, Ada!")));
    assert!(second.commands.is_empty());
}

#[tokio::test]
async fn the_same_seed_gives_the_same_commands() {
    let engine = common::engine();
    let module = engine.load(&common::guest("test-scenarios")).unwrap();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut instance = Instance::new(&engine, &module, options()).await.unwrap();
        instance.set_time(common::START_MS, false);
        runs.push(
            instance
                .start("entropy", &json!(null))
                .await
                .unwrap()
                .commands,
        );
    }
    assert_eq!(runs[0], runs[1]);
    let mut other = Instance::new(
        &engine,
        &module,
        InstanceOptions {
            seed: 43,
            ..options()
        },
    )
    .await
    .unwrap();
    other.set_time(common::START_MS, false);
    assert_ne!(
        other.start("entropy", &json!(null)).await.unwrap().commands,
        runs[0],
        "the seed feeds the guest's randomness"
    );
}

#[tokio::test]
async fn a_module_is_compiled_once_and_reused_from_the_disk_cache() {
    let dir = tempfile::tempdir().unwrap();
    let config = weft::wasm::EngineConfig {
        cache_dir: Some(dir.path().to_owned()),
        ..Default::default()
    };
    let bytes = common::guest("hello-workflow");
    let first = weft::wasm::WasmEngine::new(config.clone()).unwrap();
    let m = first.load(&bytes).unwrap();
    let mut cached: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    cached.sort();
    assert_eq!(
        cached.len(),
        2,
        "the artifact and the host's key: {cached:?}"
    );
    assert!(cached[0].starts_with(m.sha256().as_str()), "{cached:?}");
    assert_eq!(cached[1], "cache-mac.key");
    // A new engine (a restarted process) loads the artifact instead of compiling.
    let second = weft::wasm::WasmEngine::new(config).unwrap();
    let m2 = second.load(&bytes).unwrap();
    let mut instance = Instance::new(&second, &m2, options()).await.unwrap();
    assert_eq!(
        instance.start("hello", &json!("Bo")).await.unwrap().status,
        GuestStatus::Pending
    );
}

/// A compiled artifact another host wrote (valid, but not tagged with this
/// host's key), planted in the cache under the right name, is not loaded:
/// the module is compiled again and the artifact rewritten with this
/// host's tag.
#[tokio::test]
async fn a_planted_artifact_is_compiled_again_not_loaded() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    let config = |dir: &std::path::Path| weft::wasm::EngineConfig {
        cache_dir: Some(dir.join("cache")),
        pooled_instances: 0,
        ..Default::default()
    };
    let bytes = common::guest("hello-workflow");
    weft::wasm::WasmEngine::new(config(theirs.path()))
        .unwrap()
        .load(&bytes)
        .unwrap();
    let artifact = |dir: &std::path::Path| {
        std::fs::read_dir(dir.join("cache"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .unwrap()
    };
    let planted = artifact(theirs.path());
    let ours_engine = weft::wasm::WasmEngine::new(config(ours.path())).unwrap();
    let name = planted.file_name().unwrap();
    std::fs::copy(&planted, ours.path().join("cache").join(name)).unwrap();
    let m = ours_engine.load(&bytes).unwrap();
    let mut instance = Instance::new(&ours_engine, &m, options()).await.unwrap();
    assert_eq!(
        instance.start("hello", &json!("Bo")).await.unwrap().status,
        GuestStatus::Pending
    );
    assert_ne!(
        std::fs::read(artifact(ours.path())).unwrap(),
        std::fs::read(&planted).unwrap(),
        "the planted artifact was loaded, not compiled again"
    );
}

/// Compiled modules are kept least recently used first up to
/// `max_loaded_modules`, and a module over `max_module_bytes` is refused
/// before it is compiled, naming the limit.
#[tokio::test]
async fn compiled_modules_are_bounded_in_number_and_size() {
    let hello = common::guest("hello-workflow");
    let misbehave = common::guest("test-misbehave");
    let engine = weft::wasm::WasmEngine::new(weft::wasm::EngineConfig {
        max_loaded_modules: 1,
        max_module_bytes: hello.len().max(misbehave.len()),
        ..Default::default()
    })
    .unwrap();
    let first = engine.load(&hello).unwrap();
    assert!(engine.loaded(first.sha256()).is_some());
    let second = engine.load(&misbehave).unwrap();
    assert!(
        engine.loaded(first.sha256()).is_none(),
        "the least recently used module made room"
    );
    assert!(engine.loaded(second.sha256()).is_some());
    // Still usable by whoever holds it, and loaded again on demand.
    let mut instance = Instance::new(&engine, &first, options()).await.unwrap();
    assert_eq!(
        instance.start("hello", &json!("Bo")).await.unwrap().status,
        GuestStatus::Pending
    );
    assert_eq!(engine.load(&hello).unwrap().sha256(), first.sha256());

    let mut big = hello.clone();
    big.resize(hello.len().max(misbehave.len()) + 1, 0);
    match engine.load(&big) {
        Err(e @ weft::wasm::LoadError::TooLarge { .. }) => {
            assert!(e.to_string().contains("max_module_bytes"), "{e}")
        }
        Err(other) => panic!("expected TooLarge, got {other}"),
        Ok(_) => panic!("expected TooLarge, got a module"),
    }
}
