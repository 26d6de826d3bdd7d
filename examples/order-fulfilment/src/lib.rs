//! The order-fulfilment example's activities: in-memory inventory, payment
//! gateway, carrier, warehouse and mailer with injected, deterministic
//! failures, behind the activities the `fulfil_order` workflow calls
//! (`workflow/src/lib.rs`).

use serde::Deserialize;
use std::sync::{Arc, Mutex};
use weft::{Activities, ActivityContext, ActivityError};

/// Which failures to inject.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The inventory service is unavailable this many times before it answers.
    pub inventory_outages: u32,
    /// The payment gateway times out this many times before it answers.
    pub gateway_timeouts: u32,
    /// The card is declined (not retried).
    pub card_declined: bool,
    /// The warehouse's API fails this many times before it takes the notice.
    pub warehouse_failures: u32,
}

#[derive(Default)]
struct State {
    config: Config,
    /// Every call that changed the world, in order: `"<activity> <detail>"`.
    journal: Vec<String>,
}

/// The services, shared by the activities and whoever checks them.
#[derive(Clone, Default)]
pub struct Services(Arc<Mutex<State>>);

impl Services {
    pub fn new(config: Config) -> Self {
        Services(Arc::new(Mutex::new(State {
            config,
            journal: Vec::new(),
        })))
    }

    /// What happened, in order.
    pub fn journal(&self) -> Vec<String> {
        self.0.lock().expect("services poisoned").journal.clone()
    }

    /// How many journal lines start with `activity`.
    pub fn count(&self, activity: &str) -> usize {
        self.journal()
            .iter()
            .filter(|l| l.split(' ').next() == Some(activity))
            .count()
    }

    fn record(&self, line: String) {
        self.0.lock().expect("services poisoned").journal.push(line);
    }

    /// Takes one injected failure off `counter`, if any is left.
    fn fail_once(&self, counter: impl FnOnce(&mut Config) -> &mut u32) -> bool {
        let mut state = self.0.lock().expect("services poisoned");
        let n = counter(&mut state.config);
        if *n > 0 {
            *n -= 1;
            true
        } else {
            false
        }
    }
}

#[derive(Deserialize)]
pub struct Item {
    pub sku: String,
    pub qty: u32,
}

#[derive(Deserialize)]
pub struct Order {
    pub order_id: String,
    pub customer: String,
    pub items: Vec<Item>,
    pub amount_cents: u64,
}

/// The workflow's activities on `services`.
pub fn activities(services: &Services) -> Activities {
    let mut a = Activities::new();
    let s = services.clone();
    a.register("validate_order", move |_: ActivityContext, o: Order| {
        let s = s.clone();
        async move {
            if o.items.is_empty() || o.items.iter().any(|i| i.qty == 0) {
                return Err(ActivityError::non_retryable(
                    "InvalidOrder",
                    format!("order {} has no items or an item of quantity 0", o.order_id),
                ));
            }
            s.record(format!("validate_order {}", o.order_id));
            Ok(format!("{} valid for {}", o.order_id, o.customer))
        }
    });
    let s = services.clone();
    a.register("reserve_inventory", move |_: ActivityContext, o: Order| {
        let s = s.clone();
        async move {
            if s.fail_once(|c| &mut c.inventory_outages) {
                return Err(ActivityError::retryable(
                    "InventoryUnavailable",
                    "the inventory service is down",
                ));
            }
            let units: u32 = o.items.iter().map(|i| i.qty).sum();
            s.record(format!("reserve_inventory {} ({units} units)", o.order_id));
            Ok(format!("RSV-{}", o.order_id))
        }
    });
    let s = services.clone();
    a.register("charge_payment", move |ctx: ActivityContext, o: Order| {
        let s = s.clone();
        async move {
            if s.fail_once(|c| &mut c.gateway_timeouts) {
                return Err(ActivityError::retryable(
                    "GatewayTimeout",
                    "the payment gateway timed out",
                ));
            }
            if s.0.lock().expect("services poisoned").config.card_declined {
                s.record(format!("charge_payment {} declined", o.order_id));
                return Err(ActivityError::non_retryable(
                    "CardDeclined",
                    format!("the card of {} was declined", o.customer),
                ));
            }
            s.record(format!(
                "charge_payment {} {} cents",
                o.order_id, o.amount_cents
            ));
            Ok(format!("PAY-{}", ctx.idempotency_key()))
        }
    });
    let s = services.clone();
    a.register("create_shipment", move |_: ActivityContext, o: Order| {
        let s = s.clone();
        async move {
            s.record(format!("create_shipment {}", o.order_id));
            Ok::<_, ActivityError>(format!("1Z{}", o.order_id.to_uppercase()))
        }
    });
    let s = services.clone();
    a.register("notify_warehouse", move |_: ActivityContext, o: Order| {
        let s = s.clone();
        async move {
            if s.fail_once(|c| &mut c.warehouse_failures) {
                return Err(ActivityError::retryable(
                    "WarehouseUnavailable",
                    "the warehouse API answered 503",
                ));
            }
            s.record(format!("notify_warehouse {}", o.order_id));
            Ok(format!("picking list for {}", o.order_id))
        }
    });
    let s = services.clone();
    a.register("confirm_order", move |_: ActivityContext, o: Order| {
        let s = s.clone();
        async move {
            s.record(format!("confirm_order {} to {}", o.order_id, o.customer));
            Ok::<_, ActivityError>(format!("confirmation sent to {}", o.customer))
        }
    });
    for undo in ["release_inventory", "refund_payment", "cancel_shipment"] {
        let s = services.clone();
        a.register(undo, move |_: ActivityContext, what: String| {
            let s = s.clone();
            async move {
                s.record(format!("{undo} {what}"));
                Ok::<_, ActivityError>(format!("{undo} done"))
            }
        });
    }
    a
}
