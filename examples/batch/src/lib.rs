//! The activities of the batch example's workflows (see the `batch-workflow`
//! crate): the order steps `process_order` calls and the `probe`, `alert`
//! and `resolve` of `monitor`, as deterministic stand-ins for a postal
//! service, a warehouse, a payment gateway, a carrier and a health check.
//! Failures are injected by [`Config`] — stock that runs out, a card that is
//! declined, a gateway that times out, an outage of the monitored target —
//! and never drawn at random; nothing sleeps.
//!
//! [`activities`] registers them; [`sample_orders`] and [`sample_config`]
//! are the batch the demo and the tests run: 20 orders, three of which fail
//! (a bad address, a sold-out item, a declined card) and one whose payment
//! times out twice before it goes through. A [`Journal`] records every
//! attempt with the virtual time it ran at.
//!
//! ```no_run
//! # async fn f() -> Result<(), weft::testing::TestError> {
//! use batch::{activities, sample_config, sample_orders};
//! use weft::testing::{TestEnv, guest_wasm};
//!
//! let env = TestEnv::builder(activities(sample_config())).build().await?;
//! let module = env.deploy("batch", &guest_wasm("batch-workflow")?).await?;
//! let input = serde_json::json!({ "orders": sample_orders(), "max_parallel": 4 });
//! let run = env.start(&module, "batch", "batch-1", input).await?;
//! let report: serde_json::Value = env.output(&run).await?;
//! # let _ = report; Ok(()) }
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, PoisonError};
use weft::{Activities, ActivityContext, ActivityError, Clock};

/// Which failures the activities inject. The default injects none.
#[derive(Clone, Default)]
pub struct Config {
    /// SKUs the warehouse has none of: `reserve_stock` fails with `OutOfStock`.
    pub out_of_stock: BTreeSet<String>,
    /// Customers whose card is declined: `charge_payment` fails with `CardDeclined`.
    pub declined_customers: BTreeSet<String>,
    /// Order id → how many `charge_payment` attempts time out (`GatewayTimeout`) first.
    pub gateway_timeouts: BTreeMap<String, u32>,
    /// Checks (numbered from 1) during which the monitored target answers 503.
    pub outages: Vec<RangeInclusive<u64>>,
    /// Check → how many `probe` attempts time out (`ProbeTimeout`) first;
    /// three or more fail the check.
    pub probe_timeouts: BTreeMap<u64, u32>,
    /// Where every attempt is recorded.
    pub journal: Journal,
}

/// The 20 orders of the demo and the tests, ids `1001` to `1020`. Three
/// fail with [`sample_config`]: `1005` (its postcode has a letter O for a
/// zero: `InvalidAddress`), `1011` (it asks for `STOVE-09`, sold out:
/// `OutOfStock`) and `1017` (customer `c-17`'s card is declined:
/// `CardDeclined`, after its stock was reserved — and released again).
pub fn sample_orders() -> Vec<Value> {
    const SKUS: [(&str, u64); 4] = [
        ("KETTLE-01", 2_499),
        ("TOASTER-02", 3_999),
        ("GRINDER-03", 5_499),
        ("SCALE-04", 1_999),
    ];
    (1..=20u64)
        .map(|n| {
            let id = 1000 + n;
            let (sku, price) = SKUS[(n % 4) as usize];
            let quantity = n % 3 + 1;
            let mut lines = vec![json!({ "sku": sku, "quantity": quantity })];
            let mut total = price * quantity;
            if n == 11 {
                lines.push(json!({ "sku": "STOVE-09", "quantity": 1 }));
                total += 12_999;
            }
            let postcode = if n == 5 {
                "1O115".to_owned()
            } else {
                format!("{}", 10_100 + n)
            };
            json!({
                "id": id.to_string(),
                "customer": format!("c-{n:02}"),
                "address": {
                    "street": format!("{} Lindenstrasse", n * 3),
                    "city": "Berlin",
                    "postcode": postcode,
                    "country": "DE",
                },
                "lines": lines,
                "total_cents": total,
            })
        })
        .collect()
}

/// The failures [`sample_orders`] runs into: `STOVE-09` is sold out,
/// customer `c-17`'s card is declined, and the gateway times out twice on
/// order `1008` before it charges it.
pub fn sample_config() -> Config {
    Config {
        out_of_stock: BTreeSet::from(["STOVE-09".to_owned()]),
        declined_customers: BTreeSet::from(["c-17".to_owned()]),
        gateway_timeouts: BTreeMap::from([("1008".to_owned(), 2)]),
        ..Config::default()
    }
}

/// One recorded activity attempt.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Virtual time of the attempt, ms since the Unix epoch (0 until
    /// [`Journal::set_clock`]).
    pub at_ms: u64,
    pub activity: &'static str,
    /// The order id or the check number the attempt was for.
    pub subject: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// What happened, in a few words.
    pub text: String,
}

/// Every activity attempt, in the order they ran. Cheap to clone; clones
/// share the record.
#[derive(Clone, Default)]
pub struct Journal {
    state: Arc<Mutex<JournalState>>,
}

#[derive(Default)]
struct JournalState {
    entries: Vec<Entry>,
    clock: Option<Arc<dyn Clock>>,
    read: usize,
}

impl Journal {
    /// Stamps entries with this clock's time (the test environment's).
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        self.lock().clock = Some(clock);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JournalState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, ctx: &ActivityContext, activity: &'static str, subject: &str, text: String) {
        let mut state = self.lock();
        let at_ms = state.clock.as_ref().map_or(0, |c| c.now_ms());
        state.entries.push(Entry {
            at_ms,
            activity,
            subject: subject.to_owned(),
            attempt: ctx.attempt,
            text,
        });
    }

    /// Everything recorded so far.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().entries.clone()
    }

    /// The attempts of `activity`.
    pub fn of(&self, activity: &str) -> Vec<Entry> {
        self.lock()
            .entries
            .iter()
            .filter(|e| e.activity == activity)
            .cloned()
            .collect()
    }

    /// What was recorded since the last call.
    pub fn unread(&self) -> Vec<Entry> {
        let mut state = self.lock();
        let new = state.entries[state.read..].to_vec();
        state.read = state.entries.len();
        new
    }
}

#[derive(Deserialize)]
struct Address {
    street: String,
    city: String,
    postcode: String,
    country: String,
}

#[derive(Deserialize)]
struct AddressCheck {
    order_id: String,
    address: Address,
}

#[derive(Serialize, Deserialize)]
struct Line {
    sku: String,
    quantity: u32,
}

#[derive(Deserialize)]
struct StockRequest {
    order_id: String,
    lines: Vec<Line>,
}

#[derive(Deserialize)]
struct Release {
    order_id: String,
    reservation: String,
}

#[derive(Deserialize)]
struct Charge {
    order_id: String,
    customer: String,
    amount_cents: u64,
}

#[derive(Deserialize)]
struct Refund {
    order_id: String,
    payment_id: String,
}

#[derive(Deserialize)]
struct ShipRequest {
    order_id: String,
    address: String,
    reservation: String,
}

#[derive(Deserialize)]
struct ProbeRequest {
    target: String,
    check: u64,
}

#[derive(Deserialize)]
struct AlertRequest {
    target: String,
    since_check: u64,
    failed_checks: u32,
}

#[derive(Deserialize)]
struct ResolveRequest {
    incident: String,
    check: u64,
}

/// Registers the order activities (`validate_address`, `reserve_stock`,
/// `release_stock`, `charge_payment`, `refund_payment`, `ship`) and the
/// monitor's (`probe`, `alert`, `resolve`), failing as `config` says.
pub fn activities(config: Config) -> Activities {
    let config = Arc::new(config);
    let mut a = Activities::new();
    register(&mut a, &config, "validate_address", validate_address);
    register(&mut a, &config, "reserve_stock", reserve_stock);
    register(&mut a, &config, "release_stock", release_stock);
    register(&mut a, &config, "charge_payment", charge_payment);
    register(&mut a, &config, "refund_payment", refund_payment);
    register(&mut a, &config, "ship", ship);
    register(&mut a, &config, "probe", probe);
    register(&mut a, &config, "alert", alert);
    register(&mut a, &config, "resolve", resolve);
    a
}

/// Registers a synchronous activity body: none of these stand-ins waits.
fn register<I, O>(
    activities: &mut Activities,
    config: &Arc<Config>,
    name: &'static str,
    body: fn(&Config, &ActivityContext, I) -> Result<O, ActivityError>,
) where
    I: for<'de> Deserialize<'de> + Send + 'static,
    O: Serialize + Send + 'static,
{
    let config = Arc::clone(config);
    activities.register(name, move |ctx: ActivityContext, input: I| {
        let result = body(&config, &ctx, input);
        async move { result }
    });
}

fn validate_address(
    c: &Config,
    ctx: &ActivityContext,
    req: AddressCheck,
) -> Result<Value, ActivityError> {
    let a = &req.address;
    let postcode_ok = a.postcode.len() == 5 && a.postcode.bytes().all(|b| b.is_ascii_digit());
    if a.street.trim().is_empty() || !postcode_ok {
        c.journal.record(
            ctx,
            "validate_address",
            &req.order_id,
            format!("rejected: no postcode {:?} in {}", a.postcode, a.country),
        );
        return Err(ActivityError::non_retryable(
            "InvalidAddress",
            format!(
                "the postal service knows no postcode {:?} in {} for order {}",
                a.postcode, a.country, req.order_id
            ),
        ));
    }
    let normalised = format!(
        "{}, {} {}, {}",
        a.street.to_uppercase(),
        a.postcode,
        a.city.to_uppercase(),
        a.country
    );
    c.journal
        .record(ctx, "validate_address", &req.order_id, normalised.clone());
    Ok(json!({ "normalised": normalised }))
}

fn reserve_stock(
    c: &Config,
    ctx: &ActivityContext,
    req: StockRequest,
) -> Result<Value, ActivityError> {
    if let Some(line) = req.lines.iter().find(|l| c.out_of_stock.contains(&l.sku)) {
        c.journal.record(
            ctx,
            "reserve_stock",
            &req.order_id,
            format!("{} is sold out", line.sku),
        );
        return Err(ActivityError::non_retryable(
            "OutOfStock",
            format!(
                "no {} in stock for order {} ({} wanted)",
                line.sku, req.order_id, line.quantity
            ),
        ));
    }
    let units: u32 = req.lines.iter().map(|l| l.quantity).sum();
    let reservation = format!("RSV-{}", req.order_id);
    c.journal.record(
        ctx,
        "reserve_stock",
        &req.order_id,
        format!("{reservation}: {units} units"),
    );
    Ok(json!({ "reservation": reservation }))
}

fn release_stock(c: &Config, ctx: &ActivityContext, req: Release) -> Result<Value, ActivityError> {
    c.journal.record(
        ctx,
        "release_stock",
        &req.order_id,
        format!("{} released", req.reservation),
    );
    Ok(json!({}))
}

fn charge_payment(c: &Config, ctx: &ActivityContext, req: Charge) -> Result<Value, ActivityError> {
    if c.gateway_timeouts
        .get(&req.order_id)
        .is_some_and(|n| ctx.attempt <= *n)
    {
        c.journal.record(
            ctx,
            "charge_payment",
            &req.order_id,
            "the gateway timed out".to_owned(),
        );
        return Err(ActivityError::retryable(
            "GatewayTimeout",
            "the payment gateway did not answer within 5 s",
        ));
    }
    if c.declined_customers.contains(&req.customer) {
        c.journal.record(
            ctx,
            "charge_payment",
            &req.order_id,
            format!("card of {} declined", req.customer),
        );
        return Err(ActivityError::non_retryable(
            "CardDeclined",
            format!(
                "the card of customer {} was declined for {} cents",
                req.customer, req.amount_cents
            ),
        ));
    }
    // The idempotency key is what a real gateway would deduplicate on.
    let payment_id = format!("PAY-{}", ctx.idempotency_key());
    c.journal.record(
        ctx,
        "charge_payment",
        &req.order_id,
        format!("{} cents charged", req.amount_cents),
    );
    Ok(json!({ "payment_id": payment_id }))
}

fn refund_payment(c: &Config, ctx: &ActivityContext, req: Refund) -> Result<Value, ActivityError> {
    c.journal.record(
        ctx,
        "refund_payment",
        &req.order_id,
        format!("{} refunded", req.payment_id),
    );
    Ok(json!({}))
}

fn ship(c: &Config, ctx: &ActivityContext, req: ShipRequest) -> Result<Value, ActivityError> {
    let tracking = format!("1Z{}DE", req.order_id);
    c.journal.record(
        ctx,
        "ship",
        &req.order_id,
        format!("{tracking} to {} ({})", req.address, req.reservation),
    );
    Ok(json!({ "tracking": tracking }))
}

fn probe(c: &Config, ctx: &ActivityContext, req: ProbeRequest) -> Result<Value, ActivityError> {
    let subject = req.check.to_string();
    if c.probe_timeouts
        .get(&req.check)
        .is_some_and(|n| ctx.attempt <= *n)
    {
        c.journal
            .record(ctx, "probe", &subject, "timed out".to_owned());
        return Err(ActivityError::retryable(
            "ProbeTimeout",
            format!("{} did not answer within 10 s", req.target),
        ));
    }
    let down = c.outages.iter().any(|o| o.contains(&req.check));
    // A latency that wanders deterministically between 40 and 100 ms.
    let latency_ms = 40 + req.check * 37 % 61;
    let status = if down { 503 } else { 200 };
    c.journal.record(
        ctx,
        "probe",
        &subject,
        format!("{status} in {latency_ms} ms"),
    );
    Ok(json!({ "healthy": !down, "status": status, "latency_ms": latency_ms }))
}

fn alert(c: &Config, ctx: &ActivityContext, req: AlertRequest) -> Result<Value, ActivityError> {
    let incident = format!("INC-{}", req.since_check);
    c.journal.record(
        ctx,
        "alert",
        &req.since_check.to_string(),
        format!(
            "{incident}: {} failed {} checks in a row since check {}",
            req.target, req.failed_checks, req.since_check
        ),
    );
    Ok(json!({ "incident": incident }))
}

fn resolve(c: &Config, ctx: &ActivityContext, req: ResolveRequest) -> Result<Value, ActivityError> {
    c.journal.record(
        ctx,
        "resolve",
        &req.check.to_string(),
        format!("{} resolved at check {}", req.incident, req.check),
    );
    Ok(json!({}))
}
