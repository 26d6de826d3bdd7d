//! What [`export_workflows!`](crate::export_workflows) expands to: the
//! generated bindings and the four exports. Public only so that the macro can
//! reach it from the workflow's crate; not part of the API.
//!
//! The executor of the instance lives in a thread-local between activations
//! (a component instance is single-threaded and runs exactly one run).

pub mod bindings;
mod mapping;

use crate::executor::Executor;
use std::cell::RefCell;

pub use crate::workflow::Workflow;
pub use bindings::{Guest, Job as WitJob, Status as WitStatus};

thread_local! {
    static EXECUTOR: RefCell<Option<Executor>> = const { RefCell::new(None) };
}

/// The `start` export.
pub fn start(workflows: Vec<Workflow>, workflow_type: String, input: String) -> WitStatus {
    EXECUTOR.with(|executor| {
        let mut executor = executor.borrow_mut();
        assert!(
            executor.is_none(),
            "weft-sdk: start was called twice on one instance; each run needs an instance of its own"
        );
        let (started, status) =
            Executor::start(Box::new(mapping::WasmHost), &workflows, &workflow_type, &input);
        *executor = Some(started);
        mapping::status(status)
    })
}

/// The `deliver` export.
pub fn deliver(jobs: Vec<WitJob>) -> WitStatus {
    EXECUTOR.with(|executor| {
        let mut executor = executor.borrow_mut();
        let Some(executor) = executor.as_mut() else {
            panic!("weft-sdk: deliver was called before start");
        };
        mapping::status(executor.deliver(jobs.into_iter().map(mapping::job).collect()))
    })
}

/// The `query` export.
pub fn query(name: String, input: String) -> Result<String, String> {
    EXECUTOR.with(|executor| match executor.borrow().as_ref() {
        Some(executor) => executor.query(&name, &input),
        None => Err(format!("query {name} arrived before the workflow started")),
    })
}

/// The `validate-update` export.
pub fn validate_update(name: String, input: String) -> Result<(), String> {
    EXECUTOR.with(|executor| match executor.borrow().as_ref() {
        Some(executor) => executor.validate_update(&name, &input),
        None => Err(format!("update {name} arrived before the workflow started")),
    })
}
