//! Property tests: what reads untrusted text — the canonical form the chain
//! hashes, the history's event decoder, the export verifier and the API's
//! request decoding — answers every input without a panic or a hang, and
//! what it accepts reads back the same.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::{Backend, TestHost};
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt;
use weft::Activities;
use weft::api::{ServeOptions, Tokens};
use weft::model::Event;
use weft::model::canonical::to_canonical;

/// Any JSON value a payload can hold: finite numbers, any strings and keys,
/// nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every kind of event a history holds, and a few it does not.
const KINDS: &[&str] = &[
    "workflow_started",
    "activation_started",
    "activity_scheduled",
    "activity_completed",
    "activity_failed",
    "timer_started",
    "timer_fired",
    "signal_received",
    "workflow_completed",
    "workflow_failed",
    "workflow_terminated",
    "update_received",
    "module_changed",
    "no_such_kind",
    "",
];

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // A failure prints its input; nothing is written next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The canonical text is JSON that reads back as the value it was
    /// written from, and writing that again gives the same bytes.
    #[test]
    fn canonical_text_reads_back_as_its_value(value in json_value()) {
        let text = to_canonical(&value);
        let back: Value = serde_json::from_str(&text).expect("canonical text is JSON");
        prop_assert_eq!(&back, &value);
        prop_assert_eq!(to_canonical(&back), text);
    }

    /// An event's stored kind and payload decode or are refused; what
    /// decodes writes back the same payload.
    #[test]
    fn event_payloads_decode_or_are_refused(
        kind in prop::sample::select(KINDS),
        payload in prop_oneof![any::<String>(), json_value().prop_map(|v| v.to_string())],
    ) {
        if let Ok(event) = Event::from_parts(kind, &payload) {
            let again = Event::from_parts(event.kind(), &event.payload_json())
                .expect("a decoded event's own payload decodes");
            prop_assert_eq!(again, event);
        }
    }

    /// The export verifier refuses text that is no export, without a panic.
    #[test]
    fn the_verifier_answers_any_text(text in prop_oneof![
        any::<String>(),
        json_value().prop_map(|v| v.to_string()),
    ]) {
        let _ = weft::audit::verify(&text);
    }
}

/// A request the API may meet: a route of its own or none, any segment,
/// any query, any body, any content type.
fn request() -> impl Strategy<Value = Request<Body>> {
    // Each route with its method, and now and then a method it does not take.
    let route = prop::sample::select(vec![
        (Method::POST, "/v1/workflows"),
        (Method::GET, "/v1/workflows"),
        (Method::GET, "/v1/workflows/{}"),
        (Method::GET, "/v1/workflows/{}/history"),
        (Method::GET, "/v1/workflows/{}/result"),
        (Method::POST, "/v1/workflows/{}/signals/{}"),
        (Method::POST, "/v1/workflows/{}/queries/{}"),
        (Method::POST, "/v1/workflows/{}/updates/{}"),
        (Method::POST, "/v1/workflows/{}/cancel"),
        (Method::POST, "/v1/workflows/{}/terminate"),
        (Method::POST, "/v1/workflows/{}/replay"),
        (Method::POST, "/v1/workflows/{}/resume"),
        (Method::GET, "/v1/modules"),
        (Method::PUT, "/v1/modules/{}"),
        (Method::GET, "/v1/{}"),
        (Method::DELETE, "/v1/workflows/{}"),
    ]);
    let segment = prop::collection::vec(any::<u8>(), 1..12).prop_map(|bytes| {
        bytes
            .iter()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
    });
    let query = prop_oneof![
        Just(String::new()),
        "[a-z_]{1,12}".prop_map(|k| format!("?{k}=1")),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(|bytes| format!(
            "?timeout_ms={}&limit=%{:02X}",
            bytes.len(),
            bytes.first().copied().unwrap_or(0)
        )),
        Just("?timeout_ms=18446744073709551616".to_owned()),
        Just("?limit=-1&status=nonsense".to_owned()),
        Just("?page_token=%FF%FE".to_owned()),
    ];
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        Just(br#"{"workflow_type":"x","workflow_id":"\u0000","input":null}"#.to_vec()),
    ];
    let content_type = prop_oneof![
        8 => Just("application/json"),
        1 => Just("text/plain"),
        1 => Just("application/x-www-form-urlencoded"),
    ];
    (route, segment.clone(), segment, query, body, content_type).prop_map(
        |((method, route), a, b, query, body, content_type)| {
            let path = route.replacen("{}", &a, 1).replacen("{}", &b, 1);
            Request::builder()
                .method(method)
                .uri(format!("{path}{query}"))
                .header(header::HOST, "127.0.0.1")
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(body))
                .expect("a request")
        },
    )
}

/// The API answers every request it can receive with its JSON error or a
/// JSON answer — never a server error, a panic or a hang — and keeps
/// serving.
#[test]
fn the_api_answers_any_request() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let host = runtime.block_on(TestHost::new(Backend::Sqlite, Activities::new()));
    let router = weft::api::router(host.host.clone(), &ServeOptions::new(Tokens::open()));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u32>::new());
    let cases = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&request(), |request| {
            cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let shown = format!("{} {}", request.method(), request.uri());
            let answer = runtime.block_on(async {
                tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    router.clone().oneshot(request),
                )
                .await
            });
            let response = answer
                .map_err(|_| TestCaseError::fail(format!("{shown}: no answer within 10 s")))?
                .expect("the router's error type is Infallible");
            let status = response.status();
            *statuses.lock().unwrap().entry(status.as_u16()).or_default() += 1;
            let body = runtime
                .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
                .expect("the answer's body");
            prop_assert!(
                !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
                "{shown}: {status} {}",
                String::from_utf8_lossy(&body)
            );
            if status.is_client_error() {
                let error: Value = serde_json::from_slice(&body).map_err(|e| {
                    TestCaseError::fail(format!(
                        "{shown}: {status} is not the API's JSON error ({e}): {}",
                        String::from_utf8_lossy(&body)
                    ))
                })?;
                prop_assert!(error["error"]["message"].is_string(), "{shown}: {error}");
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let cases = cases.into_inner();
    assert!(cases >= 200, "{cases} requests were tried");
    let statuses = statuses.into_inner().unwrap();
    eprintln!("the API answered {cases} arbitrary requests: {statuses:?}");
    assert!(
        statuses.keys().filter(|s| **s != 404 && **s != 405).count() >= 3,
        "the requests reach the handlers, not only the router's refusals: {statuses:?}"
    );
    // Still serving: an ordinary read answers.
    let response = runtime
        .block_on(
            router.clone().oneshot(
                Request::get("/v1/workflows")
                    .header(header::HOST, "127.0.0.1")
                    .body(Body::empty())
                    .expect("a request"),
            ),
        )
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    runtime.block_on(host.stop());
}
