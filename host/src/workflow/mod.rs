//! Running workflows: replaying histories and driving activations.
//!
//! - [`replay`]: splits a [`History`](crate::model::History) into its
//!   activations and re-runs a guest against them, reporting the first
//!   [`Divergence`]. [`replay_history`] is the offline check an auditor runs.
//! - The driver (private) runs one live activation for a claimed run: rebuild
//!   or reuse a warm instance, deliver pending jobs, record the commands, and
//!   commit everything in one transaction. A divergence or a guest trap parks
//!   the run as `stuck` with the reason; nothing is lost.

mod driver;
mod replay;

pub(crate) use driver::{ActivationReport, Driver, DriverConfig, DriverError, LocalActivity};
pub(crate) use replay::parse_history;
pub use replay::{
    Divergence, HistoryError, ReplayError, ReplayVerdict, StartInfo, replay_against, replay_history,
};
