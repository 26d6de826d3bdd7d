//! [`Context`], the workflow's handle on everything outside its own code.

use crate::activity::Activity;
use crate::cancel::Cancelled;
use crate::child::ChildWorkflow;
use crate::condition::{WaitUntil, WaitUntilTimeout};
use crate::error::WorkflowError;
use crate::executor::Shared;
use crate::host::LogLevel;
use crate::search::SearchValue;
use crate::signal::Signal;
use crate::timer::Timer;
use crate::update::UpdateHandler;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

/// The workflow's handle on activities, timers, signals, queries, updates,
/// child workflows, cancellation, conditions, background tasks, versioning,
/// visibility (status line, search attributes), time, randomness and
/// logging. Every workflow function receives one; clone it freely (all
/// clones are the same run).
///
/// Everything it offers is recorded in the run's history or derived from it,
/// so a replay sees the same answers.
#[derive(Clone)]
pub struct Context {
    shared: Rc<Shared>,
}

impl Context {
    pub(crate) fn new(shared: Rc<Shared>) -> Self {
        Self { shared }
    }

    /// Calls the activity `name` with `input` (serialized to JSON) and the
    /// host's default options; set others on the returned [`Activity`] before
    /// awaiting it. Awaiting yields the output deserialized as `T`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # async fn example(ctx: weft_sdk::Context) -> Result<(), weft_sdk::WorkflowError> {
    /// let receipt: String = ctx
    ///     .activity("charge", &("alice", 42))
    ///     .start_to_close(Duration::from_secs(30))
    ///     .await?;
    /// # let _ = receipt; Ok(()) }
    /// ```
    pub fn activity<T: DeserializeOwned>(
        &self,
        name: &str,
        input: &(impl Serialize + ?Sized),
    ) -> Activity<T> {
        let input = serde_json::to_string(input).map_err(|e| e.to_string());
        Activity::new(Rc::clone(&self.shared), name, input)
    }

    /// A durable timer that fires after `duration` of workflow time (rounded
    /// up to whole milliseconds).
    pub fn sleep(&self, duration: Duration) -> Timer {
        Timer::after(Rc::clone(&self.shared), duration)
    }

    /// The messages of signal `name`, deserialized as `T`.
    pub fn signal<T: DeserializeOwned>(&self, name: &str) -> Signal<T> {
        Signal::new(Rc::clone(&self.shared), name)
    }

    /// Answers query `name` with what `handler` returns, serialized to JSON.
    /// The handler runs between activations and must only *read* the
    /// workflow's state: a query that changes it makes replay diverge.
    /// Registering a name again replaces its handler.
    ///
    /// ```
    /// # async fn example(ctx: weft_sdk::Context) {
    /// use std::{cell::Cell, rc::Rc};
    /// let done = Rc::new(Cell::new(0u32));
    /// ctx.on_query("done", {
    ///     let done = Rc::clone(&done);
    ///     move || done.get()
    /// });
    /// # }
    /// ```
    pub fn on_query<R, F>(&self, name: &str, handler: F)
    where
        R: Serialize,
        F: Fn() -> R + 'static,
    {
        let query = name.to_owned();
        self.shared.set_query(
            name,
            Rc::new(move |_input: &str| serialize_answer(&query, &handler())),
        );
    }

    /// Like [`on_query`](Self::on_query), for a query that takes an input: the
    /// query's JSON input is deserialized as `I` and handed to `handler`.
    pub fn on_query_with<I, R, F>(&self, name: &str, handler: F)
    where
        I: DeserializeOwned,
        R: Serialize,
        F: Fn(I) -> R + 'static,
    {
        let query = name.to_owned();
        self.shared.set_query(
            name,
            Rc::new(move |input: &str| {
                let input = serde_json::from_str(input).map_err(|e| {
                    format!(
                        "the input of query {query} does not deserialize as {}: {e}",
                        std::any::type_name::<I>()
                    )
                })?;
                serialize_answer(&query, &handler(input))
            }),
        );
    }

    /// Starts the child workflow `workflow_type` (registered in this same
    /// module) with `input` (serialized to JSON); set its
    /// [`id`](ChildWorkflow::id),
    /// [`parent_close_policy`](ChildWorkflow::parent_close_policy) or
    /// [`execution_timeout`](ChildWorkflow::execution_timeout) on the returned
    /// [`ChildWorkflow`] before awaiting it. Awaiting yields the child's
    /// output deserialized as `O`.
    ///
    /// ```
    /// # async fn example(ctx: weft_sdk::Context) -> Result<(), weft_sdk::WorkflowError> {
    /// use weft_sdk::ParentClosePolicy;
    /// let receipt: String = ctx
    ///     .child_workflow("ship", &("order-7", 3))
    ///     .id(format!("{}-shipping", ctx.workflow_id()))
    ///     .parent_close_policy(ParentClosePolicy::Abandon)
    ///     .await?;
    /// # let _ = receipt; Ok(()) }
    /// ```
    pub fn child_workflow<O: DeserializeOwned>(
        &self,
        workflow_type: &str,
        input: &(impl Serialize + ?Sized),
    ) -> ChildWorkflow<O> {
        let input = serde_json::to_string(input).map_err(|e| e.to_string());
        ChildWorkflow::new(Rc::clone(&self.shared), workflow_type, input)
    }

    /// Ends this run and starts a new one of the same workflow (same id, same
    /// module, a fresh history) with `input`: return the error it gives from
    /// the workflow function. Use it to keep the history of a long-lived
    /// workflow short. Signals not yet received in this run are not carried
    /// over.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use weft_sdk::{Context, WorkflowError};
    /// async fn poll_forever(ctx: Context, round: u64) -> Result<(), WorkflowError> {
    ///     ctx.activity::<()>("poll", &round).await?;
    ///     ctx.sleep(Duration::from_secs(60)).await;
    ///     Err(ctx.continue_as_new(&(round + 1)))
    /// }
    /// ```
    pub fn continue_as_new(&self, input: &(impl Serialize + ?Sized)) -> WorkflowError {
        WorkflowError::continue_as_new(serde_json::to_string(input).map_err(|e| e.to_string()))
    }

    /// Resolves to the reason once somebody asks the run to cancel (at once
    /// if somebody already has). The workflow decides what cancelling means:
    /// typically it compensates and returns
    /// [`WorkflowError::cancelled`].
    ///
    /// ```
    /// # async fn example(ctx: weft_sdk::Context) -> Result<&'static str, weft_sdk::WorkflowError> {
    /// use weft_sdk::{select, Either, WorkflowError};
    /// match select(ctx.signal::<()>("approve").recv(), ctx.cancelled()).await {
    ///     Either::Left(()) => Ok("approved"),
    ///     Either::Right(reason) => Err(WorkflowError::cancelled(reason)),
    /// }
    /// # }
    /// ```
    pub fn cancelled(&self) -> Cancelled {
        Cancelled::new(Rc::clone(&self.shared))
    }

    /// Whether somebody has asked the run to cancel.
    pub fn is_cancel_requested(&self) -> bool {
        self.cancel_reason().is_some()
    }

    /// The reason of the run's cancel request, once one has arrived.
    pub fn cancel_reason(&self) -> Option<String> {
        self.shared.cancel_reason(None)
    }

    /// Waits until `predicate` holds. It is checked when first polled and
    /// again whenever the workflow has run and is about to wait for the host,
    /// so it may read any state the workflow's futures, tasks, signals and
    /// update handlers change (through `Rc<Cell<_>>` and the like). It must
    /// be cheap and must not change state.
    ///
    /// ```
    /// # async fn example(ctx: weft_sdk::Context) {
    /// use std::{cell::Cell, rc::Rc};
    /// let approvals = Rc::new(Cell::new(0u32));
    /// ctx.spawn({
    ///     let (ctx, approvals) = (ctx.clone(), Rc::clone(&approvals));
    ///     async move {
    ///         loop {
    ///             ctx.signal::<()>("approve").recv().await;
    ///             approvals.set(approvals.get() + 1);
    ///         }
    ///     }
    /// });
    /// ctx.wait_until(move || approvals.get() >= 2).await;
    /// # }
    /// ```
    pub fn wait_until(&self, predicate: impl Fn() -> bool + 'static) -> WaitUntil {
        WaitUntil::new(Rc::clone(&self.shared), Rc::new(predicate))
    }

    /// Like [`wait_until`](Self::wait_until), giving up after `timeout` of
    /// workflow time: `true` if the predicate held, `false` if the timeout
    /// passed first. A durable timer is started only if the predicate does
    /// not already hold, and cancelled when the predicate wins.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # async fn example(ctx: weft_sdk::Context) {
    /// let cancelling = ctx.clone();
    /// let asked = ctx
    ///     .wait_until_timeout(move || cancelling.is_cancel_requested(), Duration::from_secs(3600))
    ///     .await;
    /// # let _ = asked; }
    /// ```
    pub fn wait_until_timeout(
        &self,
        predicate: impl Fn() -> bool + 'static,
        timeout: Duration,
    ) -> WaitUntilTimeout {
        WaitUntilTimeout::new(self.wait_until(predicate), self.sleep(timeout))
    }

    /// Runs `future` as a background task, next to the workflow function: the
    /// executor polls it after the workflow function in every round, tasks in
    /// the order they were spawned. The run ends when the workflow function
    /// returns; tasks still running then are dropped without issuing
    /// commands. Share results through `Rc<Cell<_>>` or a signal-like queue.
    ///
    /// ```
    /// # async fn example(ctx: weft_sdk::Context) {
    /// let heartbeat = ctx.clone();
    /// ctx.spawn(async move {
    ///     loop {
    ///         heartbeat.sleep(std::time::Duration::from_secs(600)).await;
    ///         heartbeat.log_info("still waiting");
    ///     }
    /// });
    /// # }
    /// ```
    pub fn spawn(&self, future: impl Future<Output = ()> + 'static) {
        self.shared.spawn(Box::pin(future));
    }

    /// Handles update `name`: a request from outside that the workflow
    /// answers. Each accepted update runs `handler` with its input
    /// (deserialized as `I`) as a task of its own, like [`spawn`](Self::spawn),
    /// and its output (serialized to JSON) or failure is the caller's answer.
    /// Any input that deserializes is accepted; use
    /// [`on_update_validated`](Self::on_update_validated) to refuse some
    /// before they are recorded. Registering a name again replaces its
    /// handler. An update that arrives for a name nobody handles fails with
    /// `UnknownUpdate`.
    ///
    /// Handlers are tasks: one still running when the workflow function
    /// returns is dropped unanswered. A workflow that must answer every
    /// update counts those in flight and returns only after
    /// `ctx.wait_until(move || in_flight.get() == 0)`.
    ///
    /// ```
    /// # async fn example(ctx: weft_sdk::Context) {
    /// use std::{cell::RefCell, rc::Rc};
    /// let items = Rc::new(RefCell::new(Vec::<String>::new()));
    /// ctx.on_update("add_item", {
    ///     let items = Rc::clone(&items);
    ///     move |item: String| {
    ///         let items = Rc::clone(&items);
    ///         async move {
    ///             items.borrow_mut().push(item);
    ///             Ok(items.borrow().len())
    ///         }
    ///     }
    /// });
    /// # }
    /// ```
    pub fn on_update<I, O, F, Fut>(&self, name: &str, handler: F)
    where
        I: DeserializeOwned + 'static,
        O: Serialize,
        F: Fn(I) -> Fut + 'static,
        Fut: Future<Output = Result<O, WorkflowError>> + 'static,
    {
        self.shared
            .set_update(name, UpdateHandler::new(name, |_: &I| Ok(()), handler));
    }

    /// Like [`on_update`](Self::on_update), with a `validator` that runs
    /// before the update is recorded: an `Err` refuses it (the caller gets
    /// the message, the run's history shows nothing). The validator must
    /// only *read* the workflow's state, like a query.
    ///
    /// ```
    /// # async fn example(ctx: weft_sdk::Context) {
    /// use std::{cell::Cell, rc::Rc};
    /// let balance = Rc::new(Cell::new(0i64));
    /// ctx.on_update_validated(
    ///     "deposit",
    ///     |amount: &i64| if *amount > 0 { Ok(()) } else { Err("deposit a positive amount".to_owned()) },
    ///     {
    ///         let balance = Rc::clone(&balance);
    ///         move |amount: i64| {
    ///             let balance = Rc::clone(&balance);
    ///             async move {
    ///                 balance.set(balance.get() + amount);
    ///                 Ok(balance.get())
    ///             }
    ///         }
    ///     },
    /// );
    /// # }
    /// ```
    pub fn on_update_validated<I, O, V, F, Fut>(&self, name: &str, validator: V, handler: F)
    where
        I: DeserializeOwned + 'static,
        O: Serialize,
        V: Fn(&I) -> Result<(), String> + 'static,
        F: Fn(I) -> Fut + 'static,
        Fut: Future<Output = Result<O, WorkflowError>> + 'static,
    {
        self.shared
            .set_update(name, UpdateHandler::new(name, validator, handler));
    }

    /// Whether this run takes the new code path of change `change_id`: how
    /// one module carries the code of runs started before a change and after.
    ///
    /// A run that reaches this call live answers `true` and records a marker
    /// in its history. A replay answers what was recorded: `true` where the
    /// marker is, `false` for a run that passed this point before the change
    /// was deployed (its history has no marker), so it keeps its old commands.
    /// The first answer for an id holds for the rest of the run. Once no run
    /// from before the change is open, remove the old branch (keep the call
    /// until no run whose history has the marker is open either).
    ///
    /// ```
    /// # async fn example(ctx: weft_sdk::Context) -> Result<(), weft_sdk::WorkflowError> {
    /// let receipt: String = if ctx.patched("charge-v2") {
    ///     ctx.activity("charge_v2", "order-7").await?
    /// } else {
    ///     ctx.activity("charge", "order-7").await?
    /// };
    /// # let _ = receipt; Ok(()) }
    /// ```
    pub fn patched(&self, change_id: &str) -> bool {
        self.shared.host().patched(change_id)
    }

    /// Sets the run's status line: a short sentence `describe` and `list`
    /// show, such as "waiting for approval". At most 1 KiB.
    pub fn set_status_line(&self, text: &str) {
        self.shared.host().set_status_line(text);
    }

    /// Merges `attributes` into the run's search attributes, which `list`
    /// can filter by; [`SearchValue::Null`] removes one. One call sends one
    /// JSON object (a key given twice keeps its last value).
    ///
    /// ```
    /// # async fn example(ctx: weft_sdk::Context) {
    /// use weft_sdk::SearchValue;
    /// ctx.upsert_search_attributes([
    ///     ("customer", "acme".into()),
    ///     ("amount", 1200.into()),
    ///     ("coupon", SearchValue::Null),
    /// ]);
    /// # }
    /// ```
    pub fn upsert_search_attributes<'a>(
        &self,
        attributes: impl IntoIterator<Item = (&'a str, SearchValue)>,
    ) {
        let mut object = serde_json::Map::new();
        for (key, value) in attributes {
            match value.to_json() {
                Some(value) => {
                    object.insert(key.to_owned(), value);
                }
                None => self.log_warn(&format!(
                    "search attribute {key} was not set: {value:?} is not a number JSON can hold"
                )),
            }
        }
        let json = serde_json::Value::Object(object).to_string();
        self.shared.host().upsert_search_attributes(&json);
    }

    /// The run's workflow id.
    pub fn workflow_id(&self) -> String {
        self.shared.info().workflow_id.clone()
    }

    /// The run's workflow type: the name of the workflow function.
    pub fn workflow_type(&self) -> String {
        self.shared.info().workflow_type.clone()
    }

    /// The parent's workflow id, when this run is a child workflow.
    pub fn parent_workflow_id(&self) -> Option<String> {
        self.shared.info().parent_workflow_id.clone()
    }

    /// The workflow time of the current activation. It does not move while the
    /// workflow runs, only between activations.
    pub fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.shared.host().now_ms())
    }

    /// The next value of the run's deterministic random stream.
    pub fn random_u64(&self) -> u64 {
        self.shared.host().random_u64()
    }

    /// Writes a log line tagged with the run; dropped while replaying, so each
    /// line appears once.
    pub fn log(&self, level: LogLevel, message: &str) {
        self.shared.host().log(level, message);
    }

    /// [`log`](Self::log) at [`LogLevel::Info`].
    pub fn log_info(&self, message: &str) {
        self.log(LogLevel::Info, message);
    }

    /// [`log`](Self::log) at [`LogLevel::Warn`].
    pub fn log_warn(&self, message: &str) {
        self.log(LogLevel::Warn, message);
    }

    /// True while the host is replaying recorded history rather than running
    /// new work. Use it only for side effects that must not repeat, such as
    /// metrics; a workflow whose commands depend on it is nondeterministic.
    pub fn is_replaying(&self) -> bool {
        self.shared.host().is_replaying()
    }
}

fn serialize_answer<R: Serialize>(query: &str, answer: &R) -> Result<String, String> {
    serde_json::to_string(answer)
        .map_err(|e| format!("the answer of query {query} does not serialize to JSON: {e}"))
}
