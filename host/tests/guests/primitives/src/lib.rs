//! Workflows the host's integration tests run for the primitives of
//! `weft:workflow@0.2.0`. Their type names, inputs, outputs and the commands
//! they issue are what the tests assert on; change them together with the
//! tests. Activities are called by name and implemented by the tests: `echo`
//! returns its string input; `reserve`, `release`, `charge`, `refund`,
//! `old_path` and `new_path` take and return a string.
//!
//! - [`children::parent`], [`children::child_echo`]: children joined in order;
//! - [`children::parent_then_fail`], [`children::child_waits`]: a parent that
//!   fails with its child still open, for the parent-close policies;
//! - [`loop_can::loop_can`]: continue-as-new three times;
//! - [`order::cancellable_order`]: a saga compensated on a cancel request;
//! - [`updatable::updatable`]: a validated update that calls an activity;
//! - [`patched::patched_flow`]: a patched code path (`test-primitives-old`
//!   has the version from before the patch);
//! - [`condition::condition_flow`]: `wait_until_timeout` over state a
//!   spawned task changes;
//! - [`visibility::status_flow`], [`visibility::info_flow`]: status line,
//!   search attributes and the run's info.

mod children;
mod condition;
mod loop_can;
mod order;
mod patched;
mod updatable;
mod visibility;

use children::{child_echo, child_waits, parent, parent_then_fail};
use condition::condition_flow;
use loop_can::loop_can;
use order::cancellable_order;
use patched::patched_flow;
use updatable::updatable;
use visibility::{info_flow, status_flow};

weft_sdk::export_workflows!(
    parent,
    child_echo,
    parent_then_fail,
    child_waits,
    loop_can,
    cancellable_order,
    updatable,
    patched_flow,
    condition_flow,
    status_flow,
    info_flow,
);
