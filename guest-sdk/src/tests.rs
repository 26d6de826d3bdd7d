//! The executor, the futures and the combinators, run natively against a fake
//! host that records the commands.

mod cancellation;
mod children;
mod conditions;
mod tasks;
mod updates;
mod visibility;

use crate::child::ChildRequest;
use crate::executor::Executor;
use crate::host::{Host, Job, LogLevel, Status, WorkflowInfo};
use crate::workflow::Workflow;
use crate::{ActivityOptions, Context, Either, RetryPolicy, WorkflowError, join, join_all, select};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
enum Command {
    Activity {
        seq: u32,
        name: String,
        input: String,
        options: ActivityOptions,
    },
    Timer {
        seq: u32,
        ms: u64,
    },
    CancelTimer(u32),
    StartChild {
        seq: u32,
        request: ChildRequest,
    },
    CancelChild(u32),
    CompleteUpdate {
        id: String,
        outcome: Result<String, WorkflowError>,
    },
    /// A `patched` call and what the host answered.
    Patched {
        change_id: String,
        answer: bool,
    },
    StatusLine(String),
    SearchAttributes(String),
    CancelActivity(u32),
}

#[derive(Default)]
struct Recorder {
    commands: RefCell<Vec<Command>>,
    logs: RefCell<Vec<(LogLevel, String)>>,
    last_seq: Cell<u32>,
    now_ms: Cell<u64>,
    /// What `patched` answers per change id; true for any other (a live run).
    patches: RefCell<BTreeMap<String, bool>>,
    info: RefCell<Option<WorkflowInfo>>,
    info_calls: Cell<u32>,
}

impl Recorder {
    fn take(&self) -> Vec<Command> {
        std::mem::take(&mut self.commands.borrow_mut())
    }

    fn next_seq(&self) -> u32 {
        self.last_seq.set(self.last_seq.get() + 1);
        self.last_seq.get()
    }
}

struct FakeHost(Rc<Recorder>);

impl Host for FakeHost {
    fn now_ms(&self) -> u64 {
        self.0.now_ms.get()
    }

    fn random_u64(&self) -> u64 {
        4 // chosen by fair dice roll
    }

    fn schedule_activity(&self, name: &str, input: &str, options: &ActivityOptions) -> u32 {
        let seq = self.0.next_seq();
        self.0.commands.borrow_mut().push(Command::Activity {
            seq,
            name: name.to_owned(),
            input: input.to_owned(),
            options: options.clone(),
        });
        seq
    }

    fn request_cancel_activity(&self, seq: u32) {
        self.0
            .commands
            .borrow_mut()
            .push(Command::CancelActivity(seq));
    }

    fn start_timer(&self, ms: u64) -> u32 {
        let seq = self.0.next_seq();
        self.0
            .commands
            .borrow_mut()
            .push(Command::Timer { seq, ms });
        seq
    }

    fn cancel_timer(&self, seq: u32) {
        self.0.commands.borrow_mut().push(Command::CancelTimer(seq));
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.0.logs.borrow_mut().push((level, message.to_owned()));
    }

    fn is_replaying(&self) -> bool {
        false
    }

    fn start_child(&self, request: &ChildRequest) -> u32 {
        let seq = self.0.next_seq();
        self.0.commands.borrow_mut().push(Command::StartChild {
            seq,
            request: request.clone(),
        });
        seq
    }

    fn request_cancel_child(&self, seq: u32) {
        self.0.commands.borrow_mut().push(Command::CancelChild(seq));
    }

    fn complete_update(&self, id: &str, outcome: Result<String, WorkflowError>) {
        self.0.commands.borrow_mut().push(Command::CompleteUpdate {
            id: id.to_owned(),
            outcome,
        });
    }

    fn patched(&self, change_id: &str) -> bool {
        let answer = *self.0.patches.borrow().get(change_id).unwrap_or(&true);
        self.0.commands.borrow_mut().push(Command::Patched {
            change_id: change_id.to_owned(),
            answer,
        });
        answer
    }

    fn set_status_line(&self, text: &str) {
        self.0
            .commands
            .borrow_mut()
            .push(Command::StatusLine(text.to_owned()));
    }

    fn upsert_search_attributes(&self, attributes: &str) {
        self.0
            .commands
            .borrow_mut()
            .push(Command::SearchAttributes(attributes.to_owned()));
    }

    fn info(&self) -> WorkflowInfo {
        self.0.info_calls.set(self.0.info_calls.get() + 1);
        self.0
            .info
            .borrow()
            .clone()
            .unwrap_or_else(|| WorkflowInfo {
                workflow_id: "wf-1".to_owned(),
                workflow_type: "test".to_owned(),
                parent_workflow_id: None,
            })
    }
}

fn start(
    workflows: Vec<Workflow>,
    workflow_type: &str,
    input: &str,
) -> (Executor, Status, Rc<Recorder>) {
    let recorder = Rc::new(Recorder::default());
    let host = Box::new(FakeHost(Rc::clone(&recorder)));
    let (executor, status) = Executor::start(host, &workflows, workflow_type, input);
    (executor, status, recorder)
}

fn activity(seq: u32, name: &str, input: &str) -> Command {
    Command::Activity {
        seq,
        name: name.to_owned(),
        input: input.to_owned(),
        options: ActivityOptions::default(),
    }
}

fn resolved(seq: u32, output: &str) -> Job {
    Job::ActivityResolved {
        seq,
        outcome: Ok(output.to_owned()),
    }
}

fn signal(name: &str, input: &str) -> Job {
    Job::SignalReceived {
        name: name.to_owned(),
        input: input.to_owned(),
    }
}

fn completed(output: &str) -> Status {
    Status::Completed(output.to_owned())
}

fn failed(status: Status) -> WorkflowError {
    match status {
        Status::Failed(failure) => failure,
        other => panic!("expected a failure, got {other:?}"),
    }
}

async fn hello(ctx: Context, name: String) -> Result<String, WorkflowError> {
    let greeting: String = ctx.activity("greet", &name).await?;
    Ok(greeting)
}

#[test]
fn an_activity_is_scheduled_then_resolved() {
    let (mut executor, status, host) =
        start(vec![Workflow::new("hello", hello)], "hello", r#""bob""#);
    assert_eq!(status, Status::Pending);
    assert_eq!(host.take(), [activity(1, "greet", r#""bob""#)]);

    let status = executor.deliver(vec![resolved(1, r#""hi bob""#)]);
    assert_eq!(status, completed(r#""hi bob""#));
    assert_eq!(host.take(), []);
    // A finished run keeps answering with its final status.
    assert_eq!(executor.deliver(vec![]), completed(r#""hi bob""#));
}

#[test]
fn an_activity_failure_fails_the_workflow_with_its_error_type() {
    let (mut executor, _, _) = start(vec![Workflow::new("hello", hello)], "hello", r#""bob""#);
    let status = executor.deliver(vec![Job::ActivityResolved {
        seq: 1,
        outcome: Err(WorkflowError::new("Unfriendly", "no greeting today")),
    }]);
    let Status::Failed(failure) = status else {
        panic!("expected a failure, got {status:?}")
    };
    assert_eq!(failure.error_type(), "Unfriendly");
    assert_eq!(
        failure.message(),
        "activity greet failed: no greeting today"
    );
}

#[test]
fn an_activity_output_of_the_wrong_type_is_an_activity_error() {
    let (mut executor, _, _) = start(vec![Workflow::new("hello", hello)], "hello", r#""bob""#);
    let Status::Failed(failure) = executor.deliver(vec![resolved(1, "42")]) else {
        panic!("expected a failure")
    };
    assert_eq!(failure.error_type(), "ActivityOutputInvalid");
    assert!(
        failure.message().contains("String"),
        "{}",
        failure.message()
    );
}

#[test]
fn an_unknown_workflow_type_names_the_registered_ones() {
    async fn other(_ctx: Context, _: ()) -> Result<(), WorkflowError> {
        Ok(())
    }
    let workflows = vec![Workflow::new("hello", hello), Workflow::new("other", other)];
    let (mut executor, status, _) = start(workflows, "helo", "null");
    let Status::Failed(failure) = status else {
        panic!("expected a failure")
    };
    assert_eq!(failure.error_type(), "UnknownWorkflowType");
    assert_eq!(
        failure.message(),
        "this module has no workflow type helo; it registers: hello, other"
    );
    assert_eq!(executor.deliver(vec![]), Status::Failed(failure));
}

#[test]
fn input_that_does_not_deserialize_names_the_workflow_type() {
    let (_, status, host) = start(vec![Workflow::new("hello", hello)], "hello", "{}");
    let Status::Failed(failure) = status else {
        panic!("expected a failure")
    };
    assert_eq!(failure.error_type(), "WorkflowInputInvalid");
    assert!(
        failure
            .message()
            .starts_with("the input of workflow hello "),
        "{}",
        failure.message()
    );
    assert_eq!(host.take(), []);
}

#[test]
fn activity_options_reach_the_host() {
    async fn careful(ctx: Context, _: ()) -> Result<u32, WorkflowError> {
        let policy = RetryPolicy {
            maximum_attempts: 3,
            non_retryable_error_types: vec!["Bad".to_owned()],
            ..RetryPolicy::default()
        };
        Ok(ctx
            .activity("count", &[1, 2])
            .start_to_close(Duration::from_secs(5))
            .retry(policy.clone())
            .await?)
    }
    let (_, _, host) = start(vec![Workflow::new("careful", careful)], "careful", "null");
    let [Command::Activity { input, options, .. }] = &host.take()[..] else {
        panic!("expected one activity")
    };
    assert_eq!(input, "[1,2]");
    assert_eq!(options.start_to_close_timeout, Duration::from_secs(5));
    let retry = options.retry.as_ref().expect("a retry policy");
    assert_eq!(retry.maximum_attempts, 3);
    assert_eq!(retry.initial_interval, Duration::from_secs(1));
}

/// Waits for signal "go" or a timer, then reports which won.
async fn race(ctx: Context, _: ()) -> Result<String, WorkflowError> {
    let go = ctx.signal::<String>("go");
    match select(go.recv(), ctx.sleep(Duration::from_millis(1500))).await {
        Either::Left(message) => Ok(format!("signal {message}")),
        Either::Right(()) => {
            // The lost `recv` consumed nothing: a late message is still there.
            ctx.sleep(Duration::from_millis(10)).await;
            Ok(format!("timer, then {:?}", go.try_recv()))
        }
    }
}

#[test]
fn a_timer_that_loses_a_select_is_cancelled() {
    let (mut executor, status, host) = start(vec![Workflow::new("race", race)], "race", "null");
    assert_eq!(status, Status::Pending);
    assert_eq!(host.take(), [Command::Timer { seq: 1, ms: 1500 }]);

    let status = executor.deliver(vec![signal("go", r#""now""#)]);
    assert_eq!(status, completed(r#""signal now""#));
    assert_eq!(host.take(), [Command::CancelTimer(1)]);
}

#[test]
fn a_signal_that_loses_a_select_stays_queued() {
    let (mut executor, _, host) = start(vec![Workflow::new("race", race)], "race", "null");
    host.take();
    assert_eq!(executor.deliver(vec![Job::TimerFired(1)]), Status::Pending);
    assert_eq!(host.take(), [Command::Timer { seq: 2, ms: 10 }]);
    assert_eq!(
        executor.deliver(vec![signal("go", r#""late""#)]),
        Status::Pending
    );
    let status = executor.deliver(vec![Job::TimerFired(2)]);
    assert_eq!(status, completed(r#""timer, then Some(\"late\")""#));
    assert_eq!(host.take(), []);
}

#[test]
fn when_both_are_ready_select_takes_the_left_one() {
    let (mut executor, _, host) = start(vec![Workflow::new("race", race)], "race", "null");
    host.take();
    let status = executor.deliver(vec![Job::TimerFired(1), signal("go", r#""tie""#)]);
    assert_eq!(status, completed(r#""signal tie""#));
    // The timer had fired: nothing to cancel.
    assert_eq!(host.take(), []);
}

async fn sum(ctx: Context, count: u32) -> Result<u64, WorkflowError> {
    let adds = ctx.signal::<u64>("add");
    let total = Rc::new(Cell::new(0));
    ctx.on_query("total", {
        let total = Rc::clone(&total);
        move || total.get()
    });
    for _ in 0..count {
        total.set(total.get() + adds.recv().await);
    }
    Ok(total.get())
}

#[test]
fn signals_queue_in_order_until_received() {
    let (mut executor, _, host) = start(vec![Workflow::new("sum", sum)], "sum", "3");
    // Two in one batch, a malformed one (dropped with a warning), then the third.
    let status = executor.deliver(vec![
        signal("add", "1"),
        signal("other", "5"),
        signal("add", "2"),
    ]);
    assert_eq!(status, Status::Pending);
    assert_eq!(executor.query("total", "null"), Ok("3".to_owned()));
    assert_eq!(
        executor.deliver(vec![signal("add", r#""x""#)]),
        Status::Pending
    );
    assert_eq!(host.logs.borrow().len(), 1);
    assert_eq!(host.logs.borrow()[0].0, LogLevel::Warn);
    assert_eq!(
        executor.deliver(vec![signal("add", "10"), signal("add", "100")]),
        completed("13")
    );
}

#[test]
fn signals_that_arrive_before_anybody_waits_are_buffered() {
    async fn later(ctx: Context, _: ()) -> Result<Vec<String>, WorkflowError> {
        ctx.sleep(Duration::from_secs(1)).await;
        let names = ctx.signal::<String>("name");
        Ok(vec![names.recv().await, names.recv().await])
    }
    let (mut executor, _, _) = start(vec![Workflow::new("later", later)], "later", "null");
    assert_eq!(
        executor.deliver(vec![signal("name", r#""a""#)]),
        Status::Pending
    );
    assert_eq!(
        executor.deliver(vec![signal("name", r#""b""#)]),
        Status::Pending
    );
    assert_eq!(
        executor.deliver(vec![Job::TimerFired(1)]),
        completed(r#"["a","b"]"#)
    );
}

#[test]
fn queries_dispatch_by_name_and_list_the_known_ones() {
    async fn answers(ctx: Context, _: ()) -> Result<(), WorkflowError> {
        ctx.on_query("zeta", || "z");
        ctx.on_query_with("double", |n: u32| n * 2);
        ctx.sleep(Duration::from_secs(1)).await;
        Ok(())
    }
    let (executor, _, _) = start(vec![Workflow::new("answers", answers)], "answers", "null");
    assert_eq!(executor.query("zeta", "null"), Ok(r#""z""#.to_owned()));
    assert_eq!(executor.query("double", "21"), Ok("42".to_owned()));
    assert!(executor.query("double", "[]").is_err());
    assert_eq!(
        executor.query("nope", "null"),
        Err("unknown query nope; this workflow answers: double, zeta".to_owned())
    );

    let (executor, _, _) = start(vec![Workflow::new("hello", hello)], "hello", r#""x""#);
    assert_eq!(
        executor.query("status", "null"),
        Err("unknown query status; this workflow answers no queries".to_owned())
    );
}

async fn fan_out(ctx: Context, _: ()) -> Result<(String, String, Vec<u32>), WorkflowError> {
    let (a, b) = join(
        ctx.activity::<String>("step", "a"),
        ctx.activity::<String>("step", "b"),
    )
    .await;
    let many = join_all((0..3u32).map(|i| ctx.activity::<u32>("square", &i))).await;
    let many = many.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok((a?, b?, many))
}

#[test]
fn join_schedules_in_argument_order_and_keeps_it_in_the_output() {
    let (mut executor, _, host) = start(vec![Workflow::new("fan_out", fan_out)], "fan_out", "null");
    assert_eq!(
        host.take(),
        [activity(1, "step", r#""a""#), activity(2, "step", r#""b""#)]
    );
    assert_eq!(
        executor.deliver(vec![resolved(2, r#""B""#)]),
        Status::Pending
    );
    assert_eq!(host.take(), []);
    assert_eq!(
        executor.deliver(vec![resolved(1, r#""A""#)]),
        Status::Pending
    );
    assert_eq!(
        host.take(),
        [
            activity(3, "square", "0"),
            activity(4, "square", "1"),
            activity(5, "square", "2")
        ]
    );
    let status = executor.deliver(vec![resolved(5, "4"), resolved(3, "0"), resolved(4, "1")]);
    assert_eq!(status, completed(r#"["A","B",[0,1,4]]"#));
}

#[test]
fn time_and_randomness_come_from_the_host() {
    async fn clock(ctx: Context, _: ()) -> Result<(u64, u64), WorkflowError> {
        let now = ctx
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok((now.as_millis() as u64, ctx.random_u64()))
    }
    let recorder = Rc::new(Recorder::default());
    recorder.now_ms.set(1_700_000_000_123);
    let host = Box::new(FakeHost(Rc::clone(&recorder)));
    let (_, status) = Executor::start(host, &[Workflow::new("clock", clock)], "clock", "null");
    assert_eq!(status, completed("[1700000000123,4]"));
}

#[test]
fn sleep_rounds_up_to_whole_milliseconds() {
    async fn nap(ctx: Context, _: ()) -> Result<(), WorkflowError> {
        ctx.sleep(Duration::from_micros(1_500)).await;
        Ok(())
    }
    let (_, _, host) = start(vec![Workflow::new("nap", nap)], "nap", "null");
    assert_eq!(host.take(), [Command::Timer { seq: 1, ms: 2 }]);
}

async fn impatient(ctx: Context, _: ()) -> Result<&'static str, WorkflowError> {
    let slow = ctx.activity::<String>("slow", &());
    match select(ctx.sleep(Duration::from_secs(1)), slow).await {
        Either::Left(()) => {}
        Either::Right(_) => return Ok("fast"),
    }
    ctx.sleep(Duration::from_secs(1)).await;
    Ok("gave up")
}

#[test]
fn a_dropped_activity_is_cancelled_and_its_late_outcome_ignored() {
    let (mut executor, _, host) = start(
        vec![Workflow::new("impatient", impatient)],
        "impatient",
        "null",
    );
    assert_eq!(host.take().len(), 2);
    assert_eq!(executor.deliver(vec![Job::TimerFired(1)]), Status::Pending);
    assert_eq!(
        host.take(),
        [
            Command::CancelActivity(2),
            Command::Timer { seq: 3, ms: 1000 }
        ],
        "the activity that lost the select is cancelled"
    );
    let cancelled = Job::ActivityResolved {
        seq: 2,
        outcome: Err(WorkflowError::new("Cancelled", "cancelled")),
    };
    assert_eq!(executor.deliver(vec![cancelled]), Status::Pending);
    assert_eq!(host.take(), [], "cancelled once");
    assert_eq!(
        executor.deliver(vec![Job::TimerFired(3)]),
        completed(r#""gave up""#)
    );
}

#[test]
fn a_dropped_activity_whose_outcome_arrived_is_not_cancelled() {
    let (mut executor, _, host) = start(
        vec![Workflow::new("impatient", impatient)],
        "impatient",
        "null",
    );
    host.take();
    // Both in one activation: the timer wins the select, and the activity's
    // outcome is already in, unobserved.
    let status = executor.deliver(vec![Job::TimerFired(1), resolved(2, r#""late""#)]);
    assert_eq!(status, Status::Pending);
    assert_eq!(host.take(), [Command::Timer { seq: 3, ms: 1000 }]);
}

#[test]
fn an_activity_never_awaited_is_never_scheduled_nor_cancelled() {
    async fn undecided(ctx: Context, _: ()) -> Result<(), WorkflowError> {
        let maybe = ctx.activity::<String>("maybe", &());
        drop(maybe);
        ctx.sleep(Duration::from_secs(1)).await;
        Ok(())
    }
    let (_, _, host) = start(
        vec![Workflow::new("undecided", undecided)],
        "undecided",
        "null",
    );
    assert_eq!(host.take(), [Command::Timer { seq: 1, ms: 1000 }]);
}

#[test]
fn a_finished_activity_is_not_cancelled_when_dropped() {
    let (mut executor, _, host) = start(vec![Workflow::new("hello", hello)], "hello", r#""x""#);
    host.take();
    assert_eq!(
        executor.deliver(vec![resolved(1, r#""hi""#)]),
        completed(r#""hi""#)
    );
    drop(executor);
    assert_eq!(host.take(), []);
}

#[test]
fn tearing_the_run_down_cancels_no_activity() {
    let (executor, status, host) = start(vec![Workflow::new("hello", hello)], "hello", r#""x""#);
    assert_eq!(status, Status::Pending);
    host.take();
    // The instance goes away (evicted, the host shutting down) with the
    // activity in flight: that is not the workflow cancelling it.
    drop(executor);
    assert_eq!(host.take(), []);
}

#[test]
fn timeouts_and_local_reach_the_host() {
    async fn thorough(ctx: Context, _: ()) -> Result<(), WorkflowError> {
        let remote = ctx
            .activity::<()>("report", &())
            .schedule_to_start(Duration::from_secs(5))
            .schedule_to_close(Duration::from_secs(60))
            .heartbeat_timeout(Duration::from_micros(1_500));
        let local = ctx.local_activity::<()>("lookup", &());
        let (a, b) = join(remote, local).await;
        a?;
        b?;
        Ok(())
    }
    let (_, _, host) = start(
        vec![Workflow::new("thorough", thorough)],
        "thorough",
        "null",
    );
    let [
        Command::Activity {
            options: remote, ..
        },
        Command::Activity {
            name,
            options: local,
            ..
        },
    ] = &host.take()[..]
    else {
        panic!("expected two activities")
    };
    assert_eq!(
        remote,
        &ActivityOptions {
            schedule_to_start_timeout: Duration::from_secs(5),
            schedule_to_close_timeout: Duration::from_secs(60),
            heartbeat_timeout: Duration::from_micros(1_500),
            ..ActivityOptions::default()
        }
    );
    assert_eq!(name, "lookup");
    assert!(local.local, "local_activity sets local");
    assert_eq!(
        crate::activity::timeout_millis(Duration::from_micros(1_500)),
        2,
        "timeouts round up to whole milliseconds"
    );
    assert_eq!(
        crate::activity::timeout_millis(Duration::from_secs(5)),
        5_000
    );
}

/// Pending once, waking itself: the executor must poll again in the same
/// activation instead of waiting for a job that will never come.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

#[test]
fn a_future_woken_during_a_poll_is_polled_again() {
    async fn yielding(ctx: Context, _: ()) -> Result<String, WorkflowError> {
        for _ in 0..100 {
            YieldNow(false).await;
        }
        Ok(ctx.activity("after", &()).await?)
    }
    let (_, status, host) = start(
        vec![Workflow::new("yielding", yielding)],
        "yielding",
        "null",
    );
    assert_eq!(status, Status::Pending);
    assert_eq!(host.take(), [activity(1, "after", "null")]);
}

#[test]
#[should_panic(expected = "wakes itself in a loop")]
fn a_workflow_that_always_wakes_itself_is_stopped() {
    async fn busy(_ctx: Context, _: ()) -> Result<(), WorkflowError> {
        loop {
            YieldNow(false).await;
        }
    }
    start(vec![Workflow::new("busy", busy)], "busy", "null");
}

/// Polls its future only after its own waker fired, like the children of
/// `FuturesUnordered`: proves that jobs wake the waker the future registered.
struct PollWhenWoken<F> {
    future: Pin<Box<F>>,
    woken: Arc<ChildWaker>,
}

struct ChildWaker {
    woken: AtomicBool,
    parent: std::sync::Mutex<Option<Waker>>,
}

impl Wake for ChildWaker {
    fn wake(self: Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if let Some(parent) = self.parent.lock().expect("not poisoned").take() {
            parent.wake();
        }
    }
}

impl<F: Future> Future for PollWhenWoken<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        *self.woken.parent.lock().expect("not poisoned") = Some(cx.waker().clone());
        if !self.woken.woken.swap(false, Ordering::SeqCst) {
            return Poll::Pending;
        }
        let waker = Waker::from(Arc::clone(&self.woken));
        self.future
            .as_mut()
            .poll(&mut TaskContext::from_waker(&waker))
    }
}

#[test]
fn jobs_wake_the_waker_the_future_registered() {
    async fn picky(ctx: Context, _: ()) -> Result<String, WorkflowError> {
        let woken = Arc::new(ChildWaker {
            woken: AtomicBool::new(true),
            parent: std::sync::Mutex::new(None),
        });
        let greeting = PollWhenWoken {
            future: Box::pin(ctx.activity::<String>("greet", "x")),
            woken,
        };
        Ok(greeting.await?)
    }
    let (mut executor, _, _) = start(vec![Workflow::new("picky", picky)], "picky", "null");
    assert_eq!(
        executor.deliver(vec![signal("noise", "1")]),
        Status::Pending
    );
    assert_eq!(
        executor.deliver(vec![resolved(1, r#""hi""#)]),
        completed(r#""hi""#)
    );
}
