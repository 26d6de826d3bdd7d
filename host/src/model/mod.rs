//! The domain model: ids, events, commands, jobs and failures. No I/O lives here.
//!
//! A run's [`History`] is a list of [`Event`]s numbered from 1 and chained by
//! [`EventHash`]. Events come in three families:
//! - the run's own lifecycle: [`Event::WorkflowStarted`], [`Event::WorkflowCompleted`],
//!   [`Event::WorkflowFailed`];
//! - activation boundaries: [`Event::ActivationStarted`] opens each activation
//!   and carries its workflow time;
//! - within an activation, first the jobs delivered to the guest (see
//!   [`Event::is_job`]) and then the commands the guest issued (see
//!   [`Event::is_command`]).
//!
//! ```
//! use weft::model::{Event, History};
//! let mut history = History::default();
//! history.push(Event::ActivationStarted { time_ms: 1_000 }, 1_000);
//! assert_eq!(history.events()[0].seq, 1);
//! assert!(history.verify().is_ok());
//! ```

mod activation;
pub mod canonical;
mod event;
mod failure;
mod hash;
mod ids;

pub use activation::{ChildRequest, Command, GuestStatus, Job};
pub use event::{
    ActivityOptions, Event, ParentClosePolicy, ParentLink, RecordedEvent, RetryPolicy,
};
pub use failure::Failure;
pub use hash::{ChainError, EventHash, History};
pub(crate) use hash::{seal, seal_measured};
pub use ids::{RunId, Sha256Hex};
