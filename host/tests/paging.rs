//! Listing runs a page at a time through the real server: HTTP, gRPC (the
//! Rust client), the CLI and the web UI, with bad and misused page tokens.

mod process;

use process::{dev_with_scenarios, http, http_raw, weft};
use serde_json::{Value, json};
use weft::client::{Client, ListSpec};

/// The workflow ids of a JSON page's runs.
fn ids(page: &Value) -> Vec<String> {
    page["runs"]
        .as_array()
        .unwrap_or_else(|| panic!("a page of runs: {page}"))
        .iter()
        .map(|r| r["workflow_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Starts `workflow_type` as `workflow_id` over HTTP.
fn start(socket: &str, workflow_type: &str, workflow_id: &str, input: Value) {
    let body = json!({
        "workflow_type": workflow_type,
        "workflow_id": workflow_id,
        "input": input,
        "module": "scenarios",
    });
    let (status, answer) = http(
        socket,
        "POST",
        "/v1/workflows",
        None,
        body.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "start {workflow_id}: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_listed_a_page_at_a_time() {
    let (_dir, host) = dev_with_scenarios();
    let addr = host.address.as_str();
    let socket = host.socket();
    // Seven counters waiting for a signal, and two sleepers: another type.
    for i in 0..7 {
        start(
            &socket,
            "counter",
            &format!("count-{i}"),
            json!({"signals": 1}),
        );
    }
    for i in 0..2 {
        start(&socket, "sleep", &format!("nap-{i}"), json!(3_600_000));
    }
    let (status, whole) = http(
        &socket,
        "GET",
        "/v1/workflows?workflow_type=counter",
        None,
        b"",
    );
    assert_eq!(status, 200, "{whole}");
    assert_eq!(
        whole.get("next_page_token"),
        None,
        "one page holds them all"
    );
    let counters = ids(&whole);
    let mut sorted = counters.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (0..7).map(|i| format!("count-{i}")).collect::<Vec<_>>()
    );

    // HTTP: pages of 3, then 2, then 5 (the limit may change, the filter not);
    // a run started between pages is newer and shows on none of them.
    let get = |path: String| http(&socket, "GET", &path, None, b"");
    let (status, first) = get("/v1/workflows?workflow_type=counter&limit=3".into());
    assert_eq!(status, 200, "{first}");
    let token = first["next_page_token"]
        .as_str()
        .expect("a next page")
        .to_owned();
    start(&socket, "counter", "count-late", json!({"signals": 1}));
    let (status, second) = get(format!(
        "/v1/workflows?workflow_type=counter&limit=2&page_token={token}"
    ));
    assert_eq!(status, 200, "{second}");
    let token = second["next_page_token"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (status, third) = get(format!(
        "/v1/workflows?workflow_type=counter&limit=5&page_token={token}"
    ));
    assert_eq!(status, 200, "{third}");
    assert_eq!(third.get("next_page_token"), None, "the last page: {third}");
    let paged = [ids(&first), ids(&second), ids(&third)].concat();
    assert_eq!(paged, counters, "each older run once, in order");

    // A token that is not one, and a token used with another filter.
    let (status, e) = get("/v1/workflows?workflow_type=counter&page_token=bm90IGEgdG9rZW4".into());
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["code"], "invalid_argument", "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("page_token"), "{message}");
    assert!(
        message.contains("start again without page_token"),
        "{message}"
    );
    let (status, e) = get(format!(
        "/v1/workflows?workflow_type=sleep&page_token={}",
        first["next_page_token"].as_str().unwrap()
    ));
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["code"], "invalid_argument", "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("another filter") && message.contains("start again without page_token"),
        "{message}"
    );
    // The host keeps serving.
    let (status, sleepers) = get("/v1/workflows?workflow_type=sleep".into());
    assert_eq!((status, ids(&sleepers).len()), (200, 2), "{sleepers}");

    // gRPC through the Rust client: every run, 4 a page, each once.
    let client = Client::connect(addr, None).await.expect("connect");
    let mut spec = ListSpec {
        limit: 4,
        ..ListSpec::default()
    };
    let mut listed = Vec::new();
    loop {
        let page = client.list_page(&spec).await.expect("list_page");
        assert!(page.runs.len() <= 4);
        listed.extend(page.runs.into_iter().map(|r| r.workflow_id));
        match page.next_page_token {
            Some(token) => spec.page_token = Some(token),
            None => break,
        }
    }
    assert_eq!(listed.len(), 10, "{listed:?}");
    let mut unique = listed.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 10, "no run twice: {listed:?}");
    let first = client
        .list_page(&ListSpec {
            limit: 1,
            ..ListSpec::default()
        })
        .await
        .expect("list_page");
    let e = client
        .list_page(&ListSpec {
            status: Some("completed".into()),
            page_token: first.next_page_token.clone(),
            ..ListSpec::default()
        })
        .await
        .expect_err("a token of another filter");
    assert_eq!(e.code, tonic::Code::InvalidArgument, "{e}");
    assert!(e.message.contains("another filter"), "{e}");
    let e = client
        .list_page(&ListSpec {
            page_token: Some("%%%".into()),
            ..ListSpec::default()
        })
        .await
        .expect_err("a malformed token");
    assert_eq!(e.code, tonic::Code::InvalidArgument, "{e}");
    assert!(e.message.contains("start again without page_token"), "{e}");

    // The CLI: a page ends with how to get the next; --all follows the pages.
    let table = weft(addr, &["list", "--type", "sleep", "--limit", "1"]);
    let last = table.ok().lines().last().unwrap_or_default().to_owned();
    let token = last
        .split_whitespace()
        .skip_while(|w| *w != "--page-token")
        .nth(1)
        .unwrap_or_else(|| panic!("the last line gives the next page's token: {table:?}"));
    let rest = weft(
        addr,
        &[
            "list",
            "--type",
            "sleep",
            "--limit",
            "1",
            "--page-token",
            token,
            "--output",
            "json",
        ],
    )
    .json();
    assert_eq!(rest.get("next_page_token"), None, "{rest}");
    let mut both = [
        vec![
            table
                .ok()
                .lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned(),
        ],
        ids(&rest),
    ]
    .concat();
    both.sort();
    assert_eq!(both, ["nap-0", "nap-1"], "{table:?} {rest}");
    let all = weft(
        addr,
        &[
            "list", "--type", "counter", "--limit", "3", "--all", "--output", "json",
        ],
    )
    .json();
    assert_eq!(all.get("next_page_token"), None, "{all}");
    let all = ids(&all);
    assert_eq!(all.len(), 8, "{all:?}");
    assert_eq!(
        &all[1..],
        counters.as_slice(),
        "the late run first, then the rest"
    );
    let bad = weft(addr, &["list", "--page-token", "%%%"]);
    assert_ne!(bad.code, 0);
    assert!(
        bad.stderr.contains("start again without page_token"),
        "{bad:?}"
    );

    // The web UI: a next page link that keeps the filters, and a bad token's error page.
    let page = |path: &str| {
        let (status, _, body) = http_raw(&socket, "GET", path, &[], b"");
        (status, body)
    };
    let (status, body) = page("/ui?workflow_type=counter&limit=5");
    assert_eq!(status, 200, "{body}");
    let next = body
        .split(r#"rel="next" href=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("a next page link: {body}"))
        .replace("&amp;", "&");
    assert!(
        next.starts_with("/ui?workflow_type=counter&limit=5&page_token="),
        "{next}"
    );
    let (status, body) = page(&next);
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains(r#"rel="next""#), "the last page: {body}");
    assert!(body.contains("first page"), "{body}");
    for id in &counters[4..] {
        assert!(
            body.contains(&format!(">{id}<")),
            "{id} on the second page: {body}"
        );
    }
    let (status, body) = page("/ui?page_token=nonsense");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("start again without page_token"), "{body}");
}

/// Runs carry memos and outputs of up to 2 MiB: a page holds only as many
/// as fit in 3 MiB encoded (under the 4 MiB message every gRPC client takes
/// by default), and the next page starts after the last it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_large_runs_is_cut_to_fit_one_message() {
    let (_dir, host) = dev_with_scenarios();
    let addr = host.address.as_str();
    let socket = host.socket();
    let memo = "m".repeat(1_500_000);
    for i in 0..3 {
        let body = json!({
            "workflow_type": "counter",
            "workflow_id": format!("large-{i}"),
            "input": {"signals": 1},
            "module": "scenarios",
            "options": {"memo": {"blob": memo}},
        });
        let (status, answer) = http(
            &socket,
            "POST",
            "/v1/workflows",
            None,
            body.to_string().as_bytes(),
        );
        assert_eq!(status, 200, "start large-{i}: {answer}");
    }
    // gRPC with the default 4 MiB a message a client takes (the Rust
    // client takes more, so the size is checked here).
    let client = Client::connect(addr, None).await.expect("connect");
    let mut spec = ListSpec::default();
    let mut listed = Vec::new();
    let mut pages = 0;
    loop {
        let page = client.list_page(&spec).await.expect("list_page");
        pages += 1;
        assert!(!page.runs.is_empty(), "every page holds a run");
        let bytes: usize = page
            .runs
            .iter()
            .map(|r| r.memo.as_ref().map_or(0, |m| m.to_string().len()))
            .sum();
        assert!(bytes < 3 << 20, "{bytes} bytes of memos in one page");
        listed.extend(page.runs.into_iter().map(|r| r.workflow_id));
        match page.next_page_token {
            Some(token) => spec.page_token = Some(token),
            None => break,
        }
    }
    assert!(pages >= 2, "three 1.5 MB runs need two pages at least");
    listed.sort();
    assert_eq!(listed, ["large-0", "large-1", "large-2"]);
    // HTTP answers from the same pages.
    let (status, first) = http(&socket, "GET", "/v1/workflows", None, b"");
    assert_eq!(status, 200);
    assert!(ids(&first).len() < 3, "cut short: {}", ids(&first).len());
    assert!(first["next_page_token"].is_string());
}
