//! `process_order`: one order, from address check to shipment, as a child
//! workflow of [`batch`](crate::batch::batch).
//!
//! Input (`Order`): `{"id": "1007", "customer": "c-7", "address": {"street":
//! "…", "city": "…", "postcode": "10115", "country": "DE"}, "lines": [{"sku":
//! "KETTLE-01", "quantity": 2}], "total_cents": 4998}`.
//!
//! Steps and the activities they call (every one retried 1 s, 2 s, 4 s, 8 s
//! apart, five attempts at most, unless it fails non-retryably):
//! 1. `validate_address` `{"order_id", "address"}` → `{"normalised"}`;
//!    fails with `InvalidAddress` (non-retryable) for an address the postal
//!    service does not know;
//! 2. `reserve_stock` `{"order_id", "lines"}` → `{"reservation"}`; fails
//!    with `OutOfStock`;
//! 3. `charge_payment` `{"order_id", "customer", "amount_cents"}` →
//!    `{"payment_id"}`; fails with `CardDeclined`, and times out now and
//!    then (`GatewayTimeout`, retried);
//! 4. a durable timer while the warehouse packs: 15 minutes plus 5 per unit;
//! 5. `ship` `{"order_id", "address", "reservation"}` → `{"tracking"}`.
//!
//! When step 3 or 5 fails, what was done is undone, newest first:
//! `refund_payment` `{"order_id", "payment_id"}` and `release_stock`
//! `{"order_id", "reservation"}`. The run then fails with the failing
//! activity's error type, which is what the parent reports.
//!
//! Query `stage`: the step it is on. Output (`Shipment`): `{"order_id",
//! "tracking", "payment_id", "charged_cents"}`.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use weft_sdk::{Context, RetryPolicy, Saga, WorkflowError};

/// An order to fulfil.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Order {
    pub(crate) id: String,
    customer: String,
    address: Address,
    lines: Vec<Line>,
    total_cents: u64,
}

#[derive(Clone, Serialize, Deserialize)]
struct Address {
    street: String,
    city: String,
    postcode: String,
    country: String,
}

#[derive(Clone, Serialize, Deserialize)]
struct Line {
    sku: String,
    quantity: u32,
}

/// What a fulfilled order reports.
#[derive(Serialize, Deserialize)]
pub(crate) struct Shipment {
    pub(crate) order_id: String,
    pub(crate) tracking: String,
    payment_id: String,
    charged_cents: u64,
}

#[derive(Serialize)]
struct AddressCheck<'a> {
    order_id: &'a str,
    address: &'a Address,
}

#[derive(Deserialize)]
struct Normalised {
    normalised: String,
}

#[derive(Serialize)]
struct StockRequest<'a> {
    order_id: &'a str,
    lines: &'a [Line],
}

#[derive(Deserialize)]
struct Reservation {
    reservation: String,
}

#[derive(Serialize)]
struct Release<'a> {
    order_id: &'a str,
    reservation: &'a str,
}

#[derive(Serialize)]
struct Charge<'a> {
    order_id: &'a str,
    customer: &'a str,
    amount_cents: u64,
}

#[derive(Deserialize)]
struct Payment {
    payment_id: String,
}

#[derive(Serialize)]
struct Refund<'a> {
    order_id: &'a str,
    payment_id: &'a str,
}

#[derive(Serialize)]
struct ShipRequest<'a> {
    order_id: &'a str,
    address: &'a str,
    reservation: &'a str,
}

#[derive(Deserialize)]
struct Tracking {
    tracking: String,
}

/// Fulfils one order; see the [module docs](self).
pub(crate) async fn process_order(ctx: Context, order: Order) -> Result<Shipment, WorkflowError> {
    let stage = Rc::new(Cell::new("validating address"));
    ctx.on_query("stage", {
        let stage = Rc::clone(&stage);
        move || stage.get()
    });
    let id = order.id.as_str();

    let address: Normalised = ctx
        .activity(
            "validate_address",
            &AddressCheck {
                order_id: id,
                address: &order.address,
            },
        )
        .retry(retry())
        .await?;

    stage.set("reserving stock");
    let reservation: Reservation = ctx
        .activity(
            "reserve_stock",
            &StockRequest {
                order_id: id,
                lines: &order.lines,
            },
        )
        .retry(retry())
        .await?;
    let mut saga = Saga::new();
    saga.add({
        let (ctx, order_id, reservation) = (
            ctx.clone(),
            order.id.clone(),
            reservation.reservation.clone(),
        );
        move || async move {
            let release = Release {
                order_id: &order_id,
                reservation: &reservation,
            };
            ctx.activity::<IgnoredAny>("release_stock", &release)
                .retry(retry())
                .await?;
            Ok(())
        }
    });

    stage.set("charging");
    let charge = ctx
        .activity::<Payment>(
            "charge_payment",
            &Charge {
                order_id: id,
                customer: &order.customer,
                amount_cents: order.total_cents,
            },
        )
        .retry(retry())
        .await;
    let payment = match charge {
        Ok(payment) => payment,
        Err(error) => {
            stage.set("undoing");
            saga.compensate().await?;
            return Err(error.into());
        }
    };
    saga.add({
        let (ctx, order_id, payment_id) =
            (ctx.clone(), order.id.clone(), payment.payment_id.clone());
        move || async move {
            let refund = Refund {
                order_id: &order_id,
                payment_id: &payment_id,
            };
            ctx.activity::<IgnoredAny>("refund_payment", &refund)
                .retry(retry())
                .await?;
            Ok(())
        }
    });

    stage.set("packing");
    let units: u64 = order.lines.iter().map(|l| u64::from(l.quantity)).sum();
    ctx.sleep(Duration::from_secs(15 * 60 + 5 * 60 * units))
        .await;

    stage.set("shipping");
    let shipped = ctx
        .activity::<Tracking>(
            "ship",
            &ShipRequest {
                order_id: id,
                address: &address.normalised,
                reservation: &reservation.reservation,
            },
        )
        .retry(retry())
        .await;
    match shipped {
        Ok(tracking) => {
            stage.set("shipped");
            Ok(Shipment {
                order_id: order.id.clone(),
                tracking: tracking.tracking,
                payment_id: payment.payment_id,
                charged_cents: order.total_cents,
            })
        }
        Err(error) => {
            stage.set("undoing");
            saga.compensate().await?;
            Err(error.into())
        }
    }
}

/// 1 s, 2 s, 4 s, 8 s apart; five attempts at most. Errors the activities
/// mark non-retryable (a bad address, a declined card) are not retried.
fn retry() -> RetryPolicy {
    RetryPolicy {
        initial_interval: Duration::from_secs(1),
        backoff_coefficient: 2.0,
        maximum_attempts: 5,
        ..RetryPolicy::default()
    }
}
