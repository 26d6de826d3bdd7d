//! Patch markers, the status line, search attributes and the run's info.

use super::*;
use crate::SearchValue;
use serde_json::json;

#[test]
fn patched_answers_what_the_host_answers() {
    async fn versions(ctx: Context, _: ()) -> Result<(bool, bool), WorkflowError> {
        Ok((ctx.patched("old-run"), ctx.patched("new-code")))
    }
    let recorder = Rc::new(Recorder::default());
    recorder
        .patches
        .borrow_mut()
        .insert("old-run".to_owned(), false);
    let host = Box::new(FakeHost(Rc::clone(&recorder)));
    let (_, status) = Executor::start(
        host,
        &[Workflow::new("versions", versions)],
        "versions",
        "null",
    );
    assert_eq!(status, completed("[false,true]"));
    assert_eq!(
        recorder.take(),
        [
            Command::Patched {
                change_id: "old-run".to_owned(),
                answer: false
            },
            Command::Patched {
                change_id: "new-code".to_owned(),
                answer: true
            },
        ]
    );
}

#[test]
fn the_status_line_and_search_attributes_reach_the_host() {
    async fn visible(ctx: Context, _: ()) -> Result<(), WorkflowError> {
        ctx.set_status_line("waiting for go");
        ctx.upsert_search_attributes([
            ("customer", "acme".into()),
            ("owner", String::from("bob").into()),
            ("amount", 1200.into()),
            ("big", i64::MAX.into()),
            ("small", (-3i32).into()),
            ("count", 7u32.into()),
            ("ratio", 0.25.into()),
            ("vip", true.into()),
            ("coupon", SearchValue::Null),
        ]);
        ctx.upsert_search_attributes([("vip", SearchValue::Null), ("vip", false.into())]);
        ctx.upsert_search_attributes([]);
        Ok(())
    }
    let (_, _, host) = start(vec![Workflow::new("visible", visible)], "visible", "null");
    let commands = host.take();
    let [
        Command::StatusLine(line),
        Command::SearchAttributes(first),
        Command::SearchAttributes(second),
        Command::SearchAttributes(third),
    ] = &commands[..]
    else {
        panic!("unexpected commands {commands:?}")
    };
    assert_eq!(line, "waiting for go");
    let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("JSON");
    assert_eq!(
        parse(first),
        json!({
            "customer": "acme",
            "owner": "bob",
            "amount": 1200,
            "big": i64::MAX,
            "small": -3,
            "count": 7,
            "ratio": 0.25,
            "vip": true,
            "coupon": null,
        })
    );
    assert_eq!(parse(second), json!({"vip": false}));
    assert_eq!(third, "{}");
}

#[test]
fn a_float_json_cannot_hold_is_skipped_with_a_warning() {
    async fn odd(ctx: Context, _: ()) -> Result<(), WorkflowError> {
        ctx.upsert_search_attributes([("ratio", f64::NAN.into()), ("ok", 1.into())]);
        Ok(())
    }
    let (_, _, host) = start(vec![Workflow::new("odd", odd)], "odd", "null");
    assert_eq!(
        host.take(),
        [Command::SearchAttributes(r#"{"ok":1}"#.to_owned())]
    );
    let logs = host.logs.borrow();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].0, LogLevel::Warn);
    assert!(logs[0].1.contains("ratio"), "{}", logs[0].1);
}

#[test]
fn the_run_info_is_asked_of_the_host_once() {
    async fn who(ctx: Context, _: ()) -> Result<Vec<Option<String>>, WorkflowError> {
        let mut seen = Vec::new();
        for _ in 0..2 {
            seen.push(Some(ctx.workflow_id()));
            seen.push(Some(ctx.workflow_type()));
            seen.push(ctx.parent_workflow_id());
        }
        Ok(seen)
    }
    let recorder = Rc::new(Recorder::default());
    *recorder.info.borrow_mut() = Some(WorkflowInfo {
        workflow_id: "order-7/2".to_owned(),
        workflow_type: "who".to_owned(),
        parent_workflow_id: Some("order-7".to_owned()),
    });
    let host = Box::new(FakeHost(Rc::clone(&recorder)));
    let (_, status) = Executor::start(host, &[Workflow::new("who", who)], "who", "null");
    assert_eq!(
        status,
        completed(r#"["order-7/2","who","order-7","order-7/2","who","order-7"]"#)
    );
    assert_eq!(recorder.info_calls.get(), 1);

    let (_, status, host) = start(vec![Workflow::new("who", who)], "who", "null");
    assert_eq!(
        status,
        completed(r#"["wf-1","test",null,"wf-1","test",null]"#)
    );
    assert_eq!(host.info_calls.get(), 1);
}
