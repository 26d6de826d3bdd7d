//! `batch`: one [`process_order`](crate::order::process_order) child workflow
//! per order, at most `max_parallel` open at once, and a report of what
//! succeeded and what failed.
//!
//! Input: `{"orders": [Order, …], "max_parallel": 4}` (an `Order` as
//! [`process_order`](crate::order) takes it).
//!
//! Each order runs as child workflow `<batch workflow id>/order-<order id>`.
//! Orders start in input order; when `max_parallel` children are open, the
//! next one starts as soon as any of them finishes. Each child runs in a
//! spawned task ([`Context::spawn`]) that brings the count of open children
//! down when its child ends, and the loop waits on that count
//! ([`Context::wait_until`]) — so a slow order never holds up the others.
//!
//! A failed order does not fail the batch: the report lists it with its
//! error type (`InvalidAddress`, `OutOfStock`, `CardDeclined`, … from the
//! child's activities; `WorkflowIdInUse` for an order id given twice).
//! The run fails only for an unusable input (`max_parallel` of 0:
//! `InvalidInput`).
//!
//! Query `progress`: `{"total", "done", "failed", "in_flight",
//! "peak_in_flight"}`; the status line says the same in words.
//!
//! Output: `{"succeeded": ["1001", …], "failed": [{"order_id", "error_type",
//! "message"}, …], "peak_in_flight": 4}`, both lists in input order.

use crate::order::{Order, Shipment};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use weft_sdk::{Context, WorkflowError};

/// The batch's input.
#[derive(Deserialize)]
pub(crate) struct BatchInput {
    orders: Vec<Order>,
    max_parallel: usize,
}

/// An order that could not be fulfilled, and why.
#[derive(Clone, Serialize)]
struct FailedOrder {
    order_id: String,
    error_type: String,
    message: String,
}

/// The batch's output.
#[derive(Serialize)]
pub(crate) struct BatchReport {
    succeeded: Vec<String>,
    failed: Vec<FailedOrder>,
    /// The most children that were open at once.
    peak_in_flight: usize,
}

/// What the `progress` query answers.
#[derive(Clone, Copy, Default, Serialize)]
struct Progress {
    total: usize,
    done: usize,
    failed: usize,
    in_flight: usize,
    peak_in_flight: usize,
}

impl Progress {
    fn line(&self) -> String {
        format!(
            "{} of {} orders done ({} failed), {} in flight",
            self.done, self.total, self.failed, self.in_flight
        )
    }
}

/// How one order ended: its tracking number, or why it failed.
type OrderOutcome = Result<String, FailedOrder>;

/// Runs every order as a child, `max_parallel` at a time; see the
/// [module docs](self).
pub(crate) async fn batch(ctx: Context, input: BatchInput) -> Result<BatchReport, WorkflowError> {
    if input.max_parallel == 0 {
        return Err(WorkflowError::new(
            "InvalidInput",
            "max_parallel is 0: no order could ever start; give at least 1",
        ));
    }
    let progress = Rc::new(RefCell::new(Progress {
        total: input.orders.len(),
        ..Progress::default()
    }));
    ctx.on_query("progress", {
        let progress = Rc::clone(&progress);
        move || *progress.borrow()
    });
    // One slot per order, filled by the order's task when its child ends.
    let outcomes: Rc<RefCell<Vec<Option<OrderOutcome>>>> =
        Rc::new(RefCell::new(vec![None; input.orders.len()]));
    let batch_id = ctx.workflow_id();
    ctx.set_status_line(&progress.borrow().line());

    for (index, order) in input.orders.into_iter().enumerate() {
        let max = input.max_parallel;
        ctx.wait_until({
            let progress = Rc::clone(&progress);
            move || progress.borrow().in_flight < max
        })
        .await;
        {
            let mut p = progress.borrow_mut();
            p.in_flight += 1;
            p.peak_in_flight = p.peak_in_flight.max(p.in_flight);
        }
        let child = ctx
            .child_workflow::<Shipment>("process_order", &order)
            .id(format!("{batch_id}/order-{}", order.id));
        let task = {
            let (ctx, progress, outcomes) =
                (ctx.clone(), Rc::clone(&progress), Rc::clone(&outcomes));
            async move {
                let outcome = match child.await {
                    Ok(shipment) => {
                        ctx.log_info(&format!(
                            "order {} shipped: {}",
                            shipment.order_id, shipment.tracking
                        ));
                        Ok(order.id)
                    }
                    Err(error) => Err(FailedOrder {
                        order_id: order.id,
                        error_type: error.error_type().to_owned(),
                        message: error.message().to_owned(),
                    }),
                };
                let line = {
                    let mut p = progress.borrow_mut();
                    p.in_flight -= 1;
                    p.done += 1;
                    if outcome.is_err() {
                        p.failed += 1;
                    }
                    p.line()
                };
                outcomes.borrow_mut()[index] = Some(outcome);
                ctx.set_status_line(&line);
            }
        };
        ctx.spawn(task);
    }
    ctx.wait_until({
        let progress = Rc::clone(&progress);
        move || progress.borrow().in_flight == 0
    })
    .await;

    let mut report = BatchReport {
        succeeded: Vec::new(),
        failed: Vec::new(),
        peak_in_flight: progress.borrow().peak_in_flight,
    };
    for outcome in outcomes.borrow_mut().drain(..).flatten() {
        match outcome {
            Ok(order_id) => report.succeeded.push(order_id),
            Err(failed) => report.failed.push(failed),
        }
    }
    Ok(report)
}
