//! Task tokens through the real server: a token names one attempt, MAC'd
//! with the database's key and bound to the worker token that polled it.
//! A token altered in any field, or presented with another worker token,
//! is refused — the same way whether or not its task exists — while the
//! honest worker completes; a host restarted on the same database, and
//! (Postgres) another host on it, take the tokens handed out before.
//!
//! The worker here is the gRPC client generated from `proto/weft/v1`, as
//! any language's worker is, so the tests see the tokens as text.

mod common;

use common::{Backend, TestHost};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use weft::Activities;
use weft::model::RunId;
use weft::store::RunStatus;

#[allow(
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    reason = "generated code"
)]
mod proto {
    tonic::include_proto!("weft.v1");
}

use proto::worker_service_client::WorkerServiceClient;

const ALICE: &str = "worker-alice";
const BOB: &str = "worker-bob";

/// What a refused token is told, whatever was wrong with it.
const REFUSAL: &str = "this task token was issued to another worker credential, or is damaged";

fn tokens() -> weft::api::Tokens {
    weft::api::Tokens::new(vec![], vec![])
        .with_workers(vec![ALICE.into(), BOB.into()])
        .unwrap()
}

/// The API of `host` on a loopback port until the sender fires.
async fn serve(host: &weft::Host) -> (String, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(weft::api::serve(host.clone(), listener, tokens(), async {
        let _ = stopped.await;
    }));
    (address, stop)
}

/// Sends `authorization: Bearer <token>` with every call.
#[derive(Clone)]
struct Bearer(&'static str);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let value = format!("Bearer {}", self.0).parse().unwrap();
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

type Client = WorkerServiceClient<InterceptedService<Channel, Bearer>>;

/// A worker's connection with `token` as its bearer token.
async fn worker(address: &str, token: &'static str) -> Client {
    let channel = Channel::from_shared(address.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    WorkerServiceClient::with_interceptor(channel, Bearer(token))
}

/// Starts a run whose one activity is `greet`, and polls its task.
async fn start_and_poll(
    t: &TestHost,
    client: &mut Client,
    id: &str,
) -> (RunId, proto::ActivityTask) {
    let module = t.deploy("test-activities").await;
    let run = t
        .start(
            &module,
            "call",
            id,
            json!({ "activity": "greet", "input": "Ada" }),
        )
        .await;
    (run, poll(client).await)
}

async fn poll(client: &mut Client) -> proto::ActivityTask {
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        client.poll_activity_task(proto::PollActivityTaskRequest {
            worker_id: "w".into(),
            activity_names: vec!["greet".into()],
            wait_ms: 20_000,
            max_tasks: 0,
        }),
    )
    .await
    .expect("the poll answers within 30 s")
    .expect("the poll succeeds")
    .into_inner();
    answer.task.expect("a task within the poll's wait")
}

async fn complete(client: &mut Client, token: &str) -> Result<(), tonic::Status> {
    client
        .complete_activity_task(proto::CompleteActivityTaskRequest {
            task_token: token.into(),
            output_json: json!("Hello, Ada!").to_string(),
        })
        .await
        .map(|_| ())
}

async fn fail(client: &mut Client, token: &str) -> Result<(), tonic::Status> {
    client
        .fail_activity_task(proto::FailActivityTaskRequest {
            task_token: token.into(),
            error_type: "Forged".into(),
            message: "not the worker's".into(),
            non_retryable: true,
            retry_after_ms: None,
        })
        .await
        .map(|_| ())
}

async fn heartbeat(client: &mut Client, token: &str) -> Result<(), tonic::Status> {
    client
        .heartbeat_activity_task(proto::HeartbeatActivityTaskRequest {
            task_token: token.into(),
            details_json: Some("{\"forged\":true}".into()),
        })
        .await
        .map(|_| ())
}

/// Complete, fail and heartbeat with `token` are each refused as a bad token.
async fn assert_refused(client: &mut Client, token: &str, what: &str) {
    for (call, sent) in [
        ("complete", complete(client, token).await),
        ("fail", fail(client, token).await),
        ("heartbeat", heartbeat(client, token).await),
    ] {
        let e = sent.expect_err(&format!("{call} with {what} is refused"));
        assert_eq!(
            e.code(),
            Code::PermissionDenied,
            "{call} with {what}: {e:?}"
        );
        assert!(e.message().contains(REFUSAL), "{call} with {what}: {e:?}");
    }
}

/// `token` with the `field`th of run id, seq, lease token, attempt changed.
fn altered(token: &str, field: usize) -> String {
    let (fields, mac) = token.rsplit_once('.').unwrap();
    let mut parts: Vec<String> = fields.split('/').map(str::to_owned).collect();
    parts[field] = match field {
        0 => {
            let mut run = parts[0].clone().into_bytes();
            run[0] = if run[0] == b'0' { b'1' } else { b'0' };
            String::from_utf8(run).unwrap()
        }
        _ => (parts[field].parse::<i64>().unwrap() + 1).to_string(),
    };
    format!("{}.{mac}", parts.join("/"))
}

/// A token altered in any field, or presented with another worker token, is
/// refused on every report, exactly as one for no task at all; the honest
/// worker's heartbeat and completion are taken, and nothing the refused
/// calls sent reached the run.
async fn task_tokens_are_bound_to_the_worker_that_claimed_them(backend: Backend) {
    let t = TestHost::new(backend, Activities::new()).await;
    let (address, stop) = serve(&t.host).await;
    let mut alice = worker(&address, ALICE).await;
    let mut bob = worker(&address, BOB).await;
    let (run, task) = start_and_poll(&t, &mut alice, "greet-bound").await;
    let token = task.task_token.clone();
    assert!(
        token.starts_with(&format!("{run}/{}/", task.seq)) && token.contains('.'),
        "{token}"
    );
    assert!(token.bytes().all(|b| b.is_ascii_graphic()), "{token}");

    assert_refused(&mut bob, &token, "another worker token").await;
    for field in 0..4 {
        let forged = altered(&token, field);
        assert_ne!(forged, token);
        assert_refused(&mut alice, &forged, &format!("field {field} altered")).await;
    }
    let (fields, mac) = token.rsplit_once('.').unwrap();
    let flipped = format!(
        "{fields}.{}{}",
        if mac.starts_with('A') { 'B' } else { 'A' },
        &mac[1..]
    );
    assert_refused(&mut alice, &flipped, "its MAC altered").await;
    // A task that does not exist is refused the same way: the answer
    // tells a forger nothing.
    let nowhere = altered(&altered(&token, 0), 1);
    assert_refused(&mut alice, &nowhere, "a token for no task").await;
    // A token from before task tokens had a MAC.
    let e = complete(&mut alice, fields)
        .await
        .expect_err("an old token");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("has no MAC"), "{e:?}");

    heartbeat(&mut alice, &token)
        .await
        .expect("the worker that polled the task heartbeats it");
    complete(&mut alice, &token)
        .await
        .expect("the worker that polled the task completes it");
    let record = t.finished(&run).await;
    assert_eq!(record.status, RunStatus::Completed, "{record:?}");
    assert_eq!(record.output, Some(json!({ "ok": "Hello, Ada!" })));
    let history = t.host.history(&run).await.unwrap();
    history.verify().unwrap();
    let kinds: Vec<&str> = history.events().iter().map(|e| e.event.kind()).collect();
    assert!(
        !kinds.contains(&"activity_failed"),
        "no refused failure was recorded: {kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "activity_completed").count(),
        1,
        "{kinds:?}"
    );
    let _ = stop.send(());
    t.stop().await;
}

/// The key is the database's: a host restarted on the same database takes
/// a token handed out before the restart.
async fn a_task_token_outlives_a_restart_of_its_host(backend: Backend) {
    let t = TestHost::new(backend, Activities::new()).await;
    let (address, stop) = serve(&t.host).await;
    let mut alice = worker(&address, ALICE).await;
    let (run, task) = start_and_poll(&t, &mut alice, "greet-restart").await;
    drop(alice);
    let _ = stop.send(());

    let t = t.restart(Activities::new()).await;
    let (address, stop) = serve(&t.host).await;
    let mut bob = worker(&address, BOB).await;
    assert_refused(&mut bob, &task.task_token, "another worker token").await;
    let mut alice = worker(&address, ALICE).await;
    complete(&mut alice, &task.task_token)
        .await
        .expect("the restarted host takes the token it handed out before");
    let record = t.finished(&run).await;
    assert_eq!(record.output, Some(json!({ "ok": "Hello, Ada!" })));
    let _ = stop.send(());
    t.stop().await;
}

both_backends!(
    task_tokens_are_bound_to_the_worker_that_claimed_them,
    a_task_token_outlives_a_restart_of_its_host,
);

/// Many hosts on one Postgres database share the key: a task polled
/// through one host is completed through another, and each refuses the
/// other worker token alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hosts_on_one_database_take_each_others_task_tokens() {
    let a = TestHost::new(Backend::Postgres, Activities::new()).await;
    let b = weft::Host::with_engine(
        common::reopen(&a.db).await,
        Activities::new(),
        common::test_config(),
        Arc::new(a.clock.clone()),
        common::engine(),
    );
    let b_running = b.run().await.unwrap();
    let (address_a, stop_a) = serve(&a.host).await;
    let (address_b, stop_b) = serve(&b).await;
    let mut alice_a = worker(&address_a, ALICE).await;
    let (run, task) = start_and_poll(&a, &mut alice_a, "greet-two-hosts").await;
    let mut bob_b = worker(&address_b, BOB).await;
    assert_refused(
        &mut bob_b,
        &task.task_token,
        "another worker token, on host b",
    )
    .await;
    let mut alice_b = worker(&address_b, ALICE).await;
    heartbeat(&mut alice_b, &task.task_token)
        .await
        .expect("host b takes a heartbeat with host a's token");
    complete(&mut alice_b, &task.task_token)
        .await
        .expect("host b takes host a's token");
    let record = a.finished(&run).await;
    assert_eq!(record.output, Some(json!({ "ok": "Hello, Ada!" })));
    let _ = stop_a.send(());
    let _ = stop_b.send(());
    b_running.shutdown().await;
    a.stop().await;
}
