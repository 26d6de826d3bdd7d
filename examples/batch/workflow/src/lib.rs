//! The batch example's workflows: a parent that fans out one child workflow
//! per order with bounded parallelism, the child, and a monitoring loop that
//! keeps its history short with continue-as-new.
//!
//! - [`batch`](batch::batch): runs [`process_order`](order::process_order)
//!   as a child workflow per order, never more than `max_parallel` at once,
//!   and reports which orders succeeded and which failed (with their error
//!   types) instead of failing the batch.
//! - [`process_order`](order::process_order): validates the address,
//!   reserves stock, charges the customer, waits for the warehouse to pack,
//!   ships — and undoes the reservation and the charge when a later step
//!   fails (a [`Saga`](weft_sdk::Saga)).
//! - [`monitor`](monitor::monitor): probes a target every minute, keeps a
//!   summary in its own input, and continues as new every 1,000 checks
//!   until a `stop` signal ends it.
//!
//! Each module's docs give the workflow's input, signals, queries, output
//! and the activities it calls.

mod batch;
mod monitor;
mod order;

use batch::batch;
use monitor::monitor;
use order::process_order;

weft_sdk::export_workflows!(batch, process_order, monitor);
