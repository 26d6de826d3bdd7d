//! Weft: a durable workflow host for WebAssembly components.
//!
//! A team writes a workflow as one async function against `weft-sdk`, compiles
//! it to a component, and hands the `.wasm` to a [`Host`]. The host records
//! every nondeterministic thing the workflow does in an append-only event log
//! and, after any failure, rebuilds the guest by replaying that log.
//!
//! ## Glossary
//!
//! | word | meaning |
//! |---|---|
//! | module | one deployed component, identified by name + version and by the sha256 of its bytes |
//! | workflow | a named long-running process; the *workflow id* is chosen by the caller and unique among open runs |
//! | run | one execution of a workflow, pinned to one module sha256 (until an upgrade moves it, recorded as `module_changed`) |
//! | default module | the module new runs of a name take; each open run stays on its own |
//! | history | the run's append-only list of events, numbered from 1, hash-chained ([`model::History`]) |
//! | command | something the guest asks of the host through an import, recorded before it has any effect |
//! | job | something the host delivers to the guest: an activity result, a fired timer, a signal |
//! | activation | one turn of the guest: jobs in, commands out, appended in one transaction |
//! | activity | a native function with side effects, at-least-once, retried by policy |
//! | task token | what a remote worker gets with an activity attempt and echoes back in its reports: the attempt, MAC'd with the database's key and bound to the worker token that polled it |
//! | replay | re-running the guest from event 1, answering every import from the history |
//! | nondeterminism | on replay the guest issues a command that differs from the recorded one |
//!
//! ## Where things live
//! - [`model`]: events, ids, the hash chain. No I/O.
//! - [`store`]: storage traits, SQLite and Postgres.
//! - [`wasm`]: the engine, compiled-module cache, virtual WASI and guest instances.
//! - [`workflow`]: replay, the nondeterminism diff, and the activation driver.
//! - [`activity`]: the registry of native activities, retries and timeouts.
//! - [`scheduler`]: the loops that claim work, and the [`Clock`].
//! - [`Host`]: the front door that ties them together.
//! - [`api`]: the service: gRPC and HTTP/JSON on one port, a read-only web UI, bearer tokens.
//! - [`client`]: a Rust client of a Weft server (what the `weft` CLI uses).
//! - [`worker`]: a remote activity worker: the same activities, in a process of their own.
//! - [`versions`]: what operators do: checked deploys and default modules,
//!   the compatibility check, upgrades, resuming stuck runs, resets, retention.
//! - [`audit`]: what auditors do: a run's export, its verification, and its
//!   replay offline.
//! - [`testing`]: a test kit for workflow authors: virtual time that skips
//!   ahead, and replay checks at every activation boundary.

pub mod activity;
pub mod api;
pub mod audit;
pub mod client;
mod host;
pub mod limits;
mod metrics;
pub mod model;
pub mod scheduler;
pub mod store;
pub mod testing;
pub mod versions;
pub mod wasm;
pub mod worker;
pub mod workflow;

pub use activity::{Activities, ActivityContext, ActivityError};
pub use host::{
    Host, HostConfig, HostError, Running, StartOptions, StartRequest, UpdateAnswer, UpdateCall,
    outcome,
};
pub use limits::RunLimits;
pub use scheduler::{Clock, ManualClock, SystemClock};
pub use store::{IdConflictPolicy, IdReusePolicy, ListCursor, ListFilter, RunPage, RunStatus};
