//! The single-threaded executor that runs one workflow across activations,
//! and [`Shared`], the state its futures reach through [`Context`].
//!
//! An activation is one call of an export. [`Executor::start`] creates the
//! root future and polls it; [`Executor::deliver`] first applies every job of
//! the batch, in order (an activity or child outcome is recorded under its
//! sequence number, a timer is marked fired, a signal is appended to the
//! queue of its name, an update spawns its handler as a task, a cancel
//! request is noted), waking the futures that wait on them, and then polls.
//!
//! Polling goes in *rounds*. A round polls the root future, then every task
//! spawned with [`Context::spawn`] (and every running update handler) in the
//! order they were spawned; a task spawned during the round is polled in it
//! too. Rounds repeat for as long as a waker fired during the previous one: a
//! future woken mid-round (say by a channel between two branches of a `join`)
//! can make progress without any new job. When a round ends with no waker
//! fired, the executor evaluates the predicates of waiting conditions
//! ([`Context::wait_until`]) and wakes those that now hold; if none does,
//! nothing can progress until the host delivers more, and the activation
//! returns [`Status::Pending`].
//!
//! The run ends when the root future does; tasks still running are dropped
//! then, without issuing commands.
//!
//! Everything here is deterministic: maps are ordered by sequence number or
//! name, tasks by spawn order, and the only inputs are the jobs and the
//! imports.

use crate::Context;
use crate::activity::ActivityOptions;
use crate::child::ChildRequest;
use crate::condition::Predicate;
use crate::error::WorkflowError;
use crate::host::{Host, Job, Status, WorkflowInfo};
use crate::update::{UNKNOWN_UPDATE, UpdateHandler};
use crate::workflow::{self, Workflow};
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll, Wake, Waker};

/// How many poll rounds one activation may run because a waker fired (or a
/// condition came true) during the previous one. A workflow that keeps waking
/// itself (a busy `yield` loop) would otherwise never end its activation;
/// past this bound the guest traps so that the host reports the activation
/// as failed instead of hanging.
const MAX_POLLS_PER_ACTIVATION: u32 = 10_000;

/// The workflow function's future, with its output already serialized.
pub(crate) type RootFuture = Pin<Box<dyn Future<Output = Result<String, WorkflowError>>>>;

/// A task spawned next to the root future.
pub(crate) type Task = Pin<Box<dyn Future<Output = ()>>>;

/// A query handler: the query's input (JSON) to its answer (JSON) or an error.
pub(crate) type QueryHandler = Rc<dyn Fn(&str) -> Result<String, String>>;

/// Runs one workflow. Lives as long as the guest instance.
pub(crate) struct Executor {
    shared: Rc<Shared>,
    /// `None` once the workflow has finished (or never started).
    root: Option<RootFuture>,
    /// Running tasks, in spawn order.
    tasks: Vec<Task>,
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
            tasks: Vec::new(),
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
                for waker in Shared::apply(&self.shared, job) {
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

    /// Whether the workflow accepts update `name` with `input`; changes nothing.
    pub(crate) fn validate_update(&self, name: &str, input: &str) -> Result<(), String> {
        if self.finished.is_some() {
            return Err(format!(
                "update {name} arrived after the workflow ended; a closed run accepts no updates"
            ));
        }
        self.shared.validate_update(name, input)
    }

    fn run(&mut self) -> Status {
        if let Some(status) = &self.finished {
            return status.clone();
        }
        let waker = Waker::from(Arc::clone(&self.woken));
        let mut cx = TaskContext::from_waker(&waker);
        for _ in 0..MAX_POLLS_PER_ACTIVATION {
            self.woken.take();
            if let Some(status) = self.poll_round(&mut cx) {
                self.finish(status.clone());
                return status;
            }
            self.shared.flush_child_cancels();
            if !self.woken.take() && !self.shared.wake_satisfied_conditions() {
                return Status::Pending;
            }
        }
        panic!(
            "weft-sdk: the workflow was woken {MAX_POLLS_PER_ACTIVATION} times in one activation \
             without ever waiting for the host; a future that wakes itself in a loop never lets \
             the activation end"
        )
    }

    /// Polls the root, then every task in spawn order; the run's final status
    /// if the root finished.
    fn poll_round(&mut self, cx: &mut TaskContext<'_>) -> Option<Status> {
        let Some(root) = self.root.as_mut() else {
            unreachable!("an executor holds its root future until it finishes")
        };
        if let Poll::Ready(result) = root.as_mut().poll(cx) {
            return Some(match result {
                Ok(output) => Status::Completed(output),
                Err(error) => error.into_status(),
            });
        }
        let mut index = 0;
        self.tasks.extend(self.shared.take_spawned());
        while let Some(task) = self.tasks.get_mut(index) {
            if task.as_mut().poll(cx).is_ready() {
                drop(self.tasks.remove(index));
            } else {
                index += 1;
            }
            // A task spawned by the root or a task runs in this round too.
            self.tasks.extend(self.shared.take_spawned());
        }
        None
    }

    /// The root finished: the run is over. What it still holds is dropped
    /// without issuing commands — a child the workflow did not wait for
    /// follows its parent-close policy, and the host closes the rest.
    fn finish(&mut self, status: Status) {
        self.finished = Some(status);
        self.shared.closed.set(true);
        self.root = None;
        self.tasks.clear();
        self.shared.clear(Keep::Queries);
    }
}

impl Drop for Executor {
    /// Tearing the run down is not the workflow cancelling its timers: the
    /// futures dropped with the root must not issue commands.
    fn drop(&mut self) {
        self.shared.closed.set(true);
        self.root = None;
        self.tasks.clear();
        self.shared.clear(Keep::Nothing);
    }
}

/// What [`Shared::clear`] leaves in place.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// A finished run still answers queries.
    Queries,
    Nothing,
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
    /// Set when the run ends or the executor is dropped: from then on,
    /// dropped futures issue no commands.
    closed: Cell<bool>,
    /// The `info` import's answer, asked once.
    info: OnceCell<WorkflowInfo>,
}

#[derive(Default)]
struct State {
    activities: BTreeMap<u32, Slot<Result<String, WorkflowError>>>,
    timers: BTreeMap<u32, Slot<()>>,
    signals: BTreeMap<String, SignalQueue>,
    queries: BTreeMap<String, QueryHandler>,
    children: BTreeMap<u32, Slot<Result<String, WorkflowError>>>,
    /// Children whose futures were dropped unresolved in this poll round.
    child_cancels: Vec<u32>,
    /// The reason of the first cancel request, once one arrived.
    cancel_reason: Option<String>,
    cancel_waiters: Vec<Waker>,
    /// Waiting conditions by registration number.
    conditions: BTreeMap<u64, Condition>,
    next_condition: u64,
    updates: BTreeMap<String, Rc<UpdateHandler>>,
    /// Tasks spawned since the executor last took them.
    spawned: Vec<Task>,
}

struct Condition {
    predicate: Predicate,
    waker: Waker,
    /// Its timeout passed: the next check settles it either way.
    expired: bool,
    /// The check found it expired with its predicate false.
    gave_up: bool,
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
            info: OnceCell::new(),
        }
    }

    /// Drops what the run registered: pending tasks, handlers and
    /// predicates hold [`Context`]s, and so would keep `Shared` alive forever.
    fn clear(&self, keep: Keep) {
        // Taken out first, dropped after: dropping a future may reach back
        // into the state (a timer's drop does).
        let state = std::mem::take(&mut *self.state.borrow_mut());
        if keep == Keep::Queries {
            self.state.borrow_mut().queries = state.queries.clone();
        }
        drop(state);
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
    fn apply(self: &Rc<Self>, job: Job) -> Vec<Waker> {
        let mut state = self.state.borrow_mut();
        match job {
            Job::ActivityResolved { seq, outcome } => resolve(&mut state.activities, seq, outcome),
            Job::TimerFired(seq) => resolve(&mut state.timers, seq, ()),
            Job::SignalReceived { name, input } => {
                let queue = state.signals.entry(name).or_default();
                queue.messages.push_back(input);
                std::mem::take(&mut queue.waiters)
            }
            Job::ChildResolved { seq, outcome } => resolve(&mut state.children, seq, outcome),
            Job::UpdateReceived { id, name, input } => {
                match state.updates.get(&name).map(Rc::clone) {
                    Some(handler) => {
                        let shared = Rc::clone(self);
                        state.spawned.push(Box::pin(async move {
                            let outcome = handler.handle(&input).await;
                            shared.host.complete_update(&id, outcome);
                        }));
                    }
                    None => {
                        let message = unknown_update(&name, &state.updates);
                        drop(state);
                        self.host
                            .complete_update(&id, Err(WorkflowError::new(UNKNOWN_UPDATE, message)));
                    }
                }
                Vec::new()
            }
            Job::CancelRequested(reason) => {
                if state.cancel_reason.is_none() {
                    state.cancel_reason = Some(reason);
                }
                std::mem::take(&mut state.cancel_waiters)
            }
        }
    }

    pub(crate) fn start_child(&self, request: &ChildRequest) -> u32 {
        let seq = self.host.start_child(request);
        self.state
            .borrow_mut()
            .children
            .insert(seq, Slot::Waiting(None));
        seq
    }

    /// The outcome of child `seq` if it has arrived; otherwise `waker` is
    /// woken when it does.
    pub(crate) fn take_child(
        &self,
        seq: u32,
        waker: &Waker,
    ) -> Option<Result<String, WorkflowError>> {
        take_or_park(&mut self.state.borrow_mut().children, seq, waker)
    }

    /// The future of child `seq` was dropped before it resolved: its outcome
    /// will be ignored, and the child is asked to cancel at the end of this
    /// poll round — unless the run ends in it, when its parent-close policy
    /// decides instead.
    pub(crate) fn drop_child(&self, seq: u32) {
        let mut state = self.state.borrow_mut();
        let slot = state.children.remove(&seq);
        if let (Some(Slot::Waiting(_)), false) = (slot, self.closed.get()) {
            state.child_cancels.push(seq);
        }
    }

    fn flush_child_cancels(&self) {
        let cancels = std::mem::take(&mut self.state.borrow_mut().child_cancels);
        for seq in cancels {
            self.host.request_cancel_child(seq);
        }
    }

    /// The reason of the run's cancel request, if one has arrived; when none
    /// has and a `waker` is given, it is woken when one does.
    pub(crate) fn cancel_reason(&self, waker: Option<&Waker>) -> Option<String> {
        let mut state = self.state.borrow_mut();
        if let Some(reason) = &state.cancel_reason {
            return Some(reason.clone());
        }
        if let Some(waker) = waker
            && !state.cancel_waiters.iter().any(|w| w.will_wake(waker))
        {
            state.cancel_waiters.push(waker.clone());
        }
        None
    }

    /// Registers (or, given its `id`, refreshes) a waiting condition; returns
    /// its id. An `expired` one (its timeout passed) is woken at the next
    /// check even if its predicate does not hold.
    pub(crate) fn register_condition(
        &self,
        id: Option<u64>,
        predicate: Predicate,
        waker: &Waker,
        expired: bool,
    ) -> u64 {
        let mut state = self.state.borrow_mut();
        let id = id.unwrap_or_else(|| {
            state.next_condition += 1;
            state.next_condition
        });
        state.conditions.insert(
            id,
            Condition {
                predicate,
                waker: waker.clone(),
                expired,
                gave_up: false,
            },
        );
        id
    }

    /// Whether the check found condition `id` expired and its predicate false.
    pub(crate) fn condition_gave_up(&self, id: u64) -> bool {
        self.state
            .borrow()
            .conditions
            .get(&id)
            .is_some_and(|condition| condition.gave_up)
    }

    pub(crate) fn unregister_condition(&self, id: u64) {
        // Taken out before it is dropped: the predicate may own futures.
        let condition = self.state.borrow_mut().conditions.remove(&id);
        drop(condition);
    }

    /// The check at the end of a round in which nothing was woken: evaluates
    /// every waiting condition, in registration order, and wakes those whose
    /// predicate holds (or whose timeout passed); true if it woke any. A woken
    /// future checks its predicate again when polled and registers again if,
    /// by then, it no longer holds.
    fn wake_satisfied_conditions(&self) -> bool {
        let waiting: Vec<(u64, Predicate)> = self
            .state
            .borrow()
            .conditions
            .iter()
            .filter(|(_, condition)| !condition.gave_up)
            .map(|(id, condition)| (*id, Rc::clone(&condition.predicate)))
            .collect();
        let mut any = false;
        for (id, predicate) in waiting {
            // Evaluated with the state released: a predicate may read anything.
            let holds = predicate();
            let mut state = self.state.borrow_mut();
            let Some(condition) = state.conditions.get_mut(&id) else {
                continue; // dropped by a predicate evaluated before it
            };
            if holds {
                // Unregistered, so that a future nobody polls any more is not
                // woken at every check.
                let removed = state.conditions.remove(&id);
                drop(state);
                if let Some(condition) = removed {
                    condition.waker.wake();
                }
                any = true;
            } else if condition.expired {
                // Stays registered, so that the future learns it gave up;
                // the check passes over it from now on.
                condition.gave_up = true;
                condition.waker.wake_by_ref();
                any = true;
            }
        }
        any
    }

    pub(crate) fn spawn(&self, task: Task) {
        self.state.borrow_mut().spawned.push(task);
    }

    fn take_spawned(&self) -> Vec<Task> {
        std::mem::take(&mut self.state.borrow_mut().spawned)
    }

    /// Registers (or replaces) the handler of update `name`.
    pub(crate) fn set_update(&self, name: &str, handler: UpdateHandler) {
        self.state
            .borrow_mut()
            .updates
            .insert(name.to_owned(), Rc::new(handler));
    }

    fn validate_update(&self, name: &str, input: &str) -> Result<(), String> {
        let handler = {
            let state = self.state.borrow();
            match state.updates.get(name) {
                Some(handler) => Rc::clone(handler),
                None => return Err(unknown_update(name, &state.updates)),
            }
        };
        // Called without the state borrowed: the validator may read anything.
        handler.validate(input)
    }

    /// The run's id, type and parent, asked of the host once.
    pub(crate) fn info(&self) -> &WorkflowInfo {
        self.info.get_or_init(|| self.host.info())
    }
}

/// Why update `name` cannot be handled, naming the ones that can.
fn unknown_update(name: &str, updates: &BTreeMap<String, Rc<UpdateHandler>>) -> String {
    if updates.is_empty() {
        format!("unknown update {name}; this workflow accepts no updates")
    } else {
        let names: Vec<&str> = updates.keys().map(String::as_str).collect();
        format!(
            "unknown update {name}; this workflow accepts: {}",
            names.join(", ")
        )
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
