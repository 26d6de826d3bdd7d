//! [`Context`], the workflow's handle on everything outside its own code.

use crate::activity::{Activity, millis};
use crate::executor::Shared;
use crate::host::LogLevel;
use crate::signal::Signal;
use crate::timer::Timer;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

/// The workflow's handle on activities, timers, signals, queries, time,
/// randomness and logging. Every workflow function receives one; clone it
/// freely (all clones are the same run).
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
        let whole = millis(duration);
        let rounded_up = if Duration::from_millis(whole) < duration {
            whole.saturating_add(1)
        } else {
            whole
        };
        Timer::new(Rc::clone(&self.shared), rounded_up)
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
