//! The `fulfil_order` workflow: an order fulfilment as a saga.
//!
//! Steps, each an activity: `validate_order`, `reserve_inventory`,
//! `charge_payment`, `create_shipment`, `notify_warehouse`, `confirm_order`.
//! Each step that changes the world registers its compensation in a
//! [`Saga`]: `release_inventory`, `refund_payment`, `cancel_shipment`.
//!
//! - A cancel request (the host's `cancel`) is honoured between steps: the
//!   step in flight finishes (a charge that went through is refunded, not
//!   lost), then the compensations of the steps done so far run in reverse
//!   order and the run ends as cancelled.
//! - A declined card (`CardDeclined`) is never retried: the reservation is
//!   released and the run fails with `CardDeclined`. So does an invalid
//!   order (`InvalidOrder`, nothing to compensate) or one out of stock.
//! - Flaky services are retried by the policy: 1 min, doubling, 8 attempts.
//!
//! Input: `{"order_id": "o-1", "customer": "ada", "items": [{"sku": "KETTLE", "qty": 1}], "amount_cents": 4999}`.
//! Query `status`: the current stage. Output: the tracking number.

use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use weft_sdk::{Context, RetryPolicy, Saga, WorkflowError};

#[derive(Deserialize, Serialize)]
struct Item {
    sku: String,
    qty: u32,
}

#[derive(Deserialize, Serialize)]
struct Order {
    order_id: String,
    customer: String,
    items: Vec<Item>,
    amount_cents: u64,
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        initial_interval: Duration::from_secs(60),
        maximum_attempts: 8,
        non_retryable_error_types: vec![
            "InvalidOrder".into(),
            "OutOfStock".into(),
            "CardDeclined".into(),
        ],
        ..RetryPolicy::default()
    }
}

/// Runs one step (`name` with `input`) and records the stage.
async fn step<T: serde::de::DeserializeOwned>(
    ctx: &Context,
    stage: &Rc<RefCell<&'static str>>,
    name: &'static str,
    input: &(impl Serialize + ?Sized),
) -> Result<T, WorkflowError> {
    *stage.borrow_mut() = name;
    ctx.set_status_line(name);
    Ok(ctx.activity(name, input).retry(policy()).await?)
}

/// Compensates what was done, in reverse, and ends the run as cancelled.
async fn cancelled(ctx: &Context, saga: Saga) -> WorkflowError {
    let reason = ctx.cancel_reason().unwrap_or_default();
    ctx.set_status_line("compensating after a cancel");
    match saga.compensate().await {
        Ok(()) => WorkflowError::cancelled(reason),
        Err(e) => e,
    }
}

/// Fulfils one order; see the [module docs](self).
async fn fulfil_order(ctx: Context, order: Order) -> Result<String, WorkflowError> {
    let stage = Rc::new(RefCell::new("received"));
    ctx.on_query("status", {
        let stage = Rc::clone(&stage);
        move || *stage.borrow()
    });
    let id = order.order_id.clone();
    let mut saga = Saga::new();
    let compensation = |name: &'static str, input: String| {
        let ctx = ctx.clone();
        move || async move {
            let _: String = ctx.activity(name, &input).retry(policy()).await?;
            Ok(())
        }
    };

    let _: String = step(&ctx, &stage, "validate_order", &order).await?;
    if ctx.is_cancel_requested() {
        return Err(cancelled(&ctx, saga).await);
    }

    let steps: [(&'static str, Option<&'static str>); 5] = [
        ("reserve_inventory", Some("release_inventory")),
        ("charge_payment", Some("refund_payment")),
        ("create_shipment", Some("cancel_shipment")),
        ("notify_warehouse", None),
        ("confirm_order", None),
    ];
    let mut tracking = String::new();
    for (name, undo) in steps {
        let done: Result<String, WorkflowError> = step(&ctx, &stage, name, &order).await;
        let done = match done {
            Ok(done) => done,
            Err(failure) => {
                ctx.set_status_line(&format!("compensating after {name} failed"));
                saga.compensate().await?;
                return Err(failure);
            }
        };
        if let Some(undo) = undo {
            saga.add(compensation(undo, done.clone()));
        }
        if name == "create_shipment" {
            tracking = done;
        }
        if ctx.is_cancel_requested() {
            return Err(cancelled(&ctx, saga).await);
        }
    }
    *stage.borrow_mut() = "confirmed";
    ctx.set_status_line(&format!("order {id} confirmed, tracking {tracking}"));
    Ok(tracking)
}

weft_sdk::export_workflows!(fulfil_order);
