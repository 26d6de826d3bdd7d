//! `weft-sdk`: write Weft workflows as ordinary async Rust functions.
//!
//! A workflow is an `async fn(Context, Input) -> Result<Output, WorkflowError>`
//! where `Input` and `Output` are any serde types. [`export_workflows!`]
//! registers one or more of them under their function names and exports the
//! `weft:workflow` world, so the crate (a `cdylib` built for
//! `wasm32-wasip2`) becomes a component a Weft host can run.
//!
//! ```
//! use weft_sdk::{Context, WorkflowError};
//!
//! /// Greets `name` through the `greet` activity.
//! async fn hello(ctx: Context, name: String) -> Result<String, WorkflowError> {
//!     let greeting: String = ctx.activity("greet", &name).await?;
//!     Ok(greeting)
//! }
//!
//! weft_sdk::export_workflows!(hello);
//! # fn main() {}
//! ```
//!
//! # How it runs
//!
//! The workflow never blocks. Each host call returns at once: awaiting
//! [`Context::activity`] issues a `schedule-activity` command and leaves the
//! future pending; the host runs the activity and later delivers its outcome
//! in a new *activation*, and the SDK's executor polls the workflow again.
//! Between activations the run is plain data — its history — so the host may
//! drop the instance and rebuild it by replaying that history. For replay to
//! reproduce the run, a workflow must take every nondeterministic input from
//! [`Context`] (or from std's time and randomness, which Weft virtualises) and
//! must not let a query handler change its state.
//!
//! The pieces:
//! - [`Context`]: activities ([`Activity`], with [`ActivityOptions`] and
//!   [`RetryPolicy`]), durable timers ([`Timer`]), [`Signal`]s, queries,
//!   workflow time, deterministic randomness, logging;
//! - child workflows: [`Context::child_workflow`] returns a
//!   [`ChildWorkflow`] with its [`ParentClosePolicy`]; it fails with a
//!   [`ChildWorkflowError`];
//! - ending a run other than by returning: [`Context::continue_as_new`], and
//!   cancellation — [`Context::cancelled`] (a [`Cancelled`] future) tells the
//!   workflow that somebody asked it to stop, [`WorkflowError::cancelled`]
//!   ends it as cancelled, and a [`Saga`] undoes what it did;
//! - updates: [`Context::on_update`] and [`Context::on_update_validated`]
//!   handle requests the workflow answers;
//! - background tasks ([`Context::spawn`]) and conditions over the
//!   workflow's own state ([`Context::wait_until`], a [`WaitUntil`];
//!   [`Context::wait_until_timeout`], a [`WaitUntilTimeout`]);
//! - versioning with [`Context::patched`]; visibility with
//!   [`Context::set_status_line`] and [`Context::upsert_search_attributes`]
//!   (each a [`SearchValue`]); the run's own [`Context::workflow_id`],
//!   [`Context::workflow_type`] and [`Context::parent_workflow_id`];
//! - [`join`], [`join_all`] and [`select`] (with [`Either`]) to wait on several
//!   futures at once;
//! - [`WorkflowError`], what a workflow fails with; [`ActivityError`] and
//!   [`ChildWorkflowError`] convert into it with `?`.
//!
//! A run is one root future — the workflow function — plus the tasks it
//! spawns and the update handlers that run, all polled by one
//! single-threaded executor in a fixed order; the run ends when the workflow
//! function returns.
//!
//! # Glossary
//!
//! | word | meaning |
//! |---|---|
//! | workflow type | the name a workflow function is registered under: the function's name |
//! | run | one execution of a workflow, with its own history |
//! | history | the run's append-only list of events, from which any instance can be rebuilt |
//! | command | something the workflow asks of the host — schedule an activity, start or cancel a timer, start a child; recorded with a sequence number before it has any effect |
//! | job | something the host delivers: an activity's or a child's outcome, a timer firing, a signal, an update, a cancel request |
//! | activation | one turn of the guest: the host delivers a batch of jobs, the workflow runs until every future is pending, and the new commands are recorded together |
//! | activity | a function that touches the outside world, run by the host with retries |
//! | replay | re-running the workflow from the start, answering every import from the history |
//! | nondeterminism | a replay issuing a different command than the history records; the host parks such a run as `stuck` |
//! | child workflow | a run started by another run (its parent), whose outcome the parent awaits |
//! | continue-as-new | ending a run and starting the same workflow afresh with a new input, to keep histories short |
//! | update | a request from outside that the workflow handles and answers, after an optional validator accepted it |
//! | patch | a change id that lets one module carry old and new code paths; see [`Context::patched`] |
//! | task | a future spawned with [`Context::spawn`], polled next to the workflow function |

mod activity;
mod cancel;
mod child;
mod combinators;
mod condition;
mod context;
mod error;
mod executor;
mod host;
mod saga;
mod search;
mod signal;
mod timer;
mod update;
mod workflow;

#[doc(hidden)]
#[path = "export/mod.rs"]
pub mod __private;

#[cfg(test)]
mod tests;

pub use activity::{Activity, ActivityError, ActivityOptions, RetryPolicy};
pub use cancel::Cancelled;
pub use child::{ChildWorkflow, ChildWorkflowError, ParentClosePolicy};
pub use combinators::{Either, Join, JoinAll, Select, join, join_all, select};
pub use condition::{WaitUntil, WaitUntilTimeout};
pub use context::Context;
pub use error::WorkflowError;
pub use host::LogLevel;
pub use saga::Saga;
pub use search::SearchValue;
pub use signal::{Recv, Signal};
pub use timer::Timer;

/// Registers workflow functions under their names and exports the
/// `weft:workflow` world. Use it once, at the root of a `cdylib` crate.
///
/// Each argument is the name of an
/// `async fn(Context, I) -> Result<O, WorkflowError>` in scope, where `I:
/// DeserializeOwned` and `O: Serialize`; the function's name is the workflow
/// type a run is started with.
///
/// ```
/// # use weft_sdk::{Context, WorkflowError};
/// async fn add(_ctx: Context, (a, b): (u64, u64)) -> Result<u64, WorkflowError> {
///     Ok(a + b)
/// }
/// async fn negate(_ctx: Context, n: i64) -> Result<i64, WorkflowError> {
///     Ok(-n)
/// }
/// weft_sdk::export_workflows!(add, negate);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_workflows {
    ($($workflow:ident),+ $(,)?) => {
        #[doc(hidden)]
        struct __WeftWorkflows;

        impl $crate::__private::Guest for __WeftWorkflows {
            fn start(
                workflow_type: ::std::string::String,
                input: ::std::string::String,
            ) -> $crate::__private::WitStatus {
                $crate::__private::start(
                    ::std::vec![$(
                        $crate::__private::Workflow::new(::core::stringify!($workflow), $workflow)
                    ),+],
                    workflow_type,
                    input,
                )
            }

            fn deliver(
                jobs: ::std::vec::Vec<$crate::__private::WitJob>,
            ) -> $crate::__private::WitStatus {
                $crate::__private::deliver(jobs)
            }

            fn query(
                name: ::std::string::String,
                input: ::std::string::String,
            ) -> ::core::result::Result<::std::string::String, ::std::string::String> {
                $crate::__private::query(name, input)
            }

            fn validate_update(
                name: ::std::string::String,
                input: ::std::string::String,
            ) -> ::core::result::Result<(), ::std::string::String> {
                $crate::__private::validate_update(name, input)
            }
        }

        $crate::__private::bindings::__weft_export!(
            __WeftWorkflows with_types_in $crate::__private::bindings
        );
    };
}
