//! The single-threaded executor that runs one workflow future across
//! activations, and [`Shared`], the state its futures reach through
//! [`Context`].
//!
//! An activation is one call of an export. [`Executor::start`] creates the
//! root future and polls it; [`Executor::deliver`] first applies every job of
//! the batch, in order (an activity outcome is recorded under its sequence
//! number, a timer is marked fired, a signal is appended to the queue of its
//! name), waking the futures that wait on them, and then polls. Either way the
//! root future is polled once, and again for as long as a waker fired during
//! the previous poll: a future woken mid-poll (say by a channel between two
//! branches of a `join`) can make progress without any new job. When a poll
//! ends with no waker fired, nothing can progress until the host delivers
//! more, and the activation returns [`Status::Pending`].
//!
//! Everything here is deterministic: maps are ordered by sequence number or
//! name, and the only inputs are the jobs and the imports.

use crate::Context;
use crate::activity::ActivityOptions;
use crate::error::WorkflowError;
use crate::host::{Host, Job, Status};
use crate::workflow::{self, Workflow};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll, Wake, Waker};

/// How many times one activation may poll the root future because a waker
/// fired during the previous poll. A workflow that keeps waking itself (a
/// busy `yield` loop) would otherwise never end its activation; past this
/// bound the guest traps so that the host reports the activation as failed
/// instead of hanging.
const MAX_POLLS_PER_ACTIVATION: u32 = 10_000;

/// The workflow function's future, with its output already serialized.
pub(crate) type RootFuture = Pin<Box<dyn Future<Output = Result<String, WorkflowError>>>>;

/// A query handler: the query's input (JSON) to its answer (JSON) or an error.
pub(crate) type QueryHandler = Rc<dyn Fn(&str) -> Result<String, String>>;

/// Runs one workflow. Lives as long as the guest instance.
pub(crate) struct Executor {
    shared: Rc<Shared>,
    /// `None` once the workflow has finished (or never started).
    root: Option<RootFuture>,
    /// The final status, repeated if the host delivers after the end.
    finished: Option<Status>,
    woken: Arc<WakeFlag>,
}

impl Executor {
    /// Begins `workflow_type` with `input` (JSON) and polls it until it waits.
    pub(crate) fn start(
        host: Box<dyn Host>,
        workflows: &[Workflow],
        workflow_type: &str,
        input: &str,
    ) -> (Self, Status) {
        let shared = Rc::new(Shared::new(host));
        let mut executor = Self {
            shared: Rc::clone(&shared),
            root: None,
            finished: None,
            woken: Arc::new(WakeFlag::default()),
        };
        let root = workflow::find(workflows, workflow_type)
            .and_then(|workflow| workflow.instantiate(Context::new(shared), input));
        match root {
            Ok(root) => executor.root = Some(root),
            Err(failure) => executor.finished = Some(Status::Failed(failure)),
        }
        let status = executor.run();
        (executor, status)
    }

    /// Applies `jobs` in order, then polls until nothing can progress.
    pub(crate) fn deliver(&mut self, jobs: Vec<Job>) -> Status {
        if self.finished.is_none() {
            for job in jobs {
                for waker in self.shared.apply(job) {
                    waker.wake();
                }
            }
        }
        self.run()
    }

    /// Answers the query `name` with the handler the workflow registered.
    pub(crate) fn query(&self, name: &str, input: &str) -> Result<String, String> {
        self.shared.query(name, input)
    }

    fn run(&mut self) -> Status {
        if let Some(status) = &self.finished {
            return status.clone();
        }
        let Some(root) = self.root.as_mut() else {
            unreachable!("an executor holds its root future until it finishes")
        };
        let waker = Waker::from(Arc::clone(&self.woken));
        let mut cx = TaskContext::from_waker(&waker);
        for _ in 0..MAX_POLLS_PER_ACTIVATION {
            self.woken.take();
            match root.as_mut().poll(&mut cx) {
                Poll::Ready(result) => {
                    let status = match result {
                        Ok(output) => Status::Completed(output),
                        Err(failure) => Status::Failed(failure),
                    };
                    self.root = None;
                    self.finished = Some(status.clone());
                    return status;
                }
                Poll::Pending if !self.woken.take() => return Status::Pending,
                Poll::Pending => {}
            }
        }
        panic!(
            "weft-sdk: the workflow was woken {MAX_POLLS_PER_ACTIVATION} times in one activation \
             without ever waiting for the host; a future that wakes itself in a loop never lets \
             the activation end"
        )
    }
}

impl Drop for Executor {
    /// Tearing the run down is not the workflow cancelling its timers: the
    /// futures dropped with the root must not issue commands.
    fn drop(&mut self) {
        self.shared.closed.set(true);
    }
}

/// The waker of the root future: it only records that something was woken.
#[derive(Default)]
struct WakeFlag(AtomicBool);

impl WakeFlag {
    /// Whether a wake happened since the last call.
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What the futures of one run share: the host and the state jobs update.
pub(crate) struct Shared {
    host: Box<dyn Host>,
    state: RefCell<State>,
    /// Set when the executor is dropped.
    closed: Cell<bool>,
}

#[derive(Default)]
struct State {
    activities: BTreeMap<u32, Slot<Result<String, WorkflowError>>>,
    timers: BTreeMap<u32, Slot<()>>,
    signals: BTreeMap<String, SignalQueue>,
    queries: BTreeMap<String, QueryHandler>,
}

/// An outstanding command: waiting (with the waker of whoever polled it last)
/// or resolved and not yet observed.
enum Slot<T> {
    Waiting(Option<Waker>),
    Ready(T),
}

#[derive(Default)]
struct SignalQueue {
    messages: VecDeque<String>,
    waiters: Vec<Waker>,
}

impl Shared {
    fn new(host: Box<dyn Host>) -> Self {
        Self {
            host,
            state: RefCell::default(),
            closed: Cell::new(false),
        }
    }

    pub(crate) fn host(&self) -> &dyn Host {
        &*self.host
    }

    pub(crate) fn schedule_activity(
        &self,
        name: &str,
        input: &str,
        options: &ActivityOptions,
    ) -> u32 {
        let seq = self.host.schedule_activity(name, input, options);
        let mut state = self.state.borrow_mut();
        state.activities.insert(seq, Slot::Waiting(None));
        seq
    }

    /// The outcome of activity `seq` if it has arrived; otherwise `waker` is
    /// woken when it does.
    pub(crate) fn take_activity(
        &self,
        seq: u32,
        waker: &Waker,
    ) -> Option<Result<String, WorkflowError>> {
        take_or_park(&mut self.state.borrow_mut().activities, seq, waker)
    }

    /// The future of activity `seq` was dropped before it observed the
    /// outcome: cancel the activity unless its outcome has arrived already.
    pub(crate) fn drop_activity(&self, seq: u32) {
        let slot = self.state.borrow_mut().activities.remove(&seq);
        if let (Some(Slot::Waiting(_)), false) = (slot, self.closed.get()) {
            self.host.request_cancel_activity(seq);
        }
    }

    pub(crate) fn start_timer(&self, duration_ms: u64) -> u32 {
        let seq = self.host.start_timer(duration_ms);
        self.state
            .borrow_mut()
            .timers
            .insert(seq, Slot::Waiting(None));
        seq
    }

    /// Whether timer `seq` has fired; otherwise `waker` is woken when it does.
    pub(crate) fn timer_fired(&self, seq: u32, waker: &Waker) -> bool {
        take_or_park(&mut self.state.borrow_mut().timers, seq, waker).is_some()
    }

    /// The future of timer `seq` was dropped before it observed the timer
    /// fire: cancel the timer unless it has fired already.
    pub(crate) fn drop_timer(&self, seq: u32) {
        let slot = self.state.borrow_mut().timers.remove(&seq);
        if let (Some(Slot::Waiting(_)), false) = (slot, self.closed.get()) {
            self.host.cancel_timer(seq);
        }
    }

    /// The oldest buffered message of signal `name`; when there is none and a
    /// `waker` is given, it is woken when the next one arrives.
    pub(crate) fn pop_signal(&self, name: &str, waker: Option<&Waker>) -> Option<String> {
        let mut state = self.state.borrow_mut();
        let queue = state.signals.entry(name.to_owned()).or_default();
        let message = queue.messages.pop_front();
        if let (None, Some(waker)) = (&message, waker)
            && !queue.waiters.iter().any(|w| w.will_wake(waker))
        {
            queue.waiters.push(waker.clone());
        }
        message
    }

    pub(crate) fn set_query(&self, name: &str, handler: QueryHandler) {
        self.state
            .borrow_mut()
            .queries
            .insert(name.to_owned(), handler);
    }

    fn query(&self, name: &str, input: &str) -> Result<String, String> {
        let handler = {
            let state = self.state.borrow();
            match state.queries.get(name) {
                Some(handler) => Rc::clone(handler),
                None if state.queries.is_empty() => {
                    return Err(format!(
                        "unknown query {name}; this workflow answers no queries"
                    ));
                }
                None => {
                    let names: Vec<&str> = state.queries.keys().map(String::as_str).collect();
                    return Err(format!(
                        "unknown query {name}; this workflow answers: {}",
                        names.join(", ")
                    ));
                }
            }
        };
        // Called without the state borrowed: the handler may read anything.
        handler(input)
    }

    /// Records `job` and returns the wakers to wake. They are woken by the
    /// caller, after the state is released.
    fn apply(&self, job: Job) -> Vec<Waker> {
        let mut state = self.state.borrow_mut();
        match job {
            Job::ActivityResolved { seq, outcome } => resolve(&mut state.activities, seq, outcome),
            Job::TimerFired(seq) => resolve(&mut state.timers, seq, ()),
            Job::SignalReceived { name, input } => {
                let queue = state.signals.entry(name).or_default();
                queue.messages.push_back(input);
                std::mem::take(&mut queue.waiters)
            }
            Job::Ignored => Vec::new(),
        }
    }
}

fn take_or_park<T>(slots: &mut BTreeMap<u32, Slot<T>>, seq: u32, waker: &Waker) -> Option<T> {
    match slots.remove(&seq) {
        Some(Slot::Ready(value)) => Some(value),
        Some(Slot::Waiting(Some(old))) if old.will_wake(waker) => {
            slots.insert(seq, Slot::Waiting(Some(old)));
            None
        }
        Some(Slot::Waiting(_)) | None => {
            slots.insert(seq, Slot::Waiting(Some(waker.clone())));
            None
        }
    }
}

/// Marks `seq` resolved. An outcome for a command nobody waits on any more
/// (its future was dropped) is discarded.
fn resolve<T>(slots: &mut BTreeMap<u32, Slot<T>>, seq: u32, value: T) -> Vec<Waker> {
    match slots.get_mut(&seq) {
        Some(slot @ Slot::Waiting(_)) => match std::mem::replace(slot, Slot::Ready(value)) {
            Slot::Waiting(waker) => waker.into_iter().collect(),
            Slot::Ready(_) => unreachable!("matched Waiting above"),
        },
        Some(Slot::Ready(_)) | None => Vec::new(),
    }
}
