//! Workflows the host's integration tests and benchmarks run. Their type
//! names, inputs, outputs and the commands they issue are what the tests
//! assert on; change them together with the tests.
//!
//! - [`steps::steps`]: activities, a timer, a signal, a `join` and a `select`
//!   in one run, with a `progress` query;
//! - [`entropy::entropy`]: std's clocks, random bytes and `HashMap` order,
//!   which Weft makes deterministic;
//! - [`query_mutates::query_mutates`]: a deliberately buggy query that
//!   changes state, so that replay diverges;
//! - [`counter::counter`]: sums `add` signals, with a `total` query;
//! - [`chain::chain`]: many sequential activities, for replay speed.

mod chain;
mod counter;
mod entropy;
mod query_mutates;
mod steps;

use chain::chain;
use counter::counter;
use entropy::entropy;
use query_mutates::query_mutates;
use steps::steps;

weft_sdk::export_workflows!(steps, entropy, query_mutates, counter, chain);
