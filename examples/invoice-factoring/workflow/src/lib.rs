//! The `invoice_factoring` workflow: a factor buys a client's unpaid invoice,
//! advances most of its amount at once, waits for the client's customer (the
//! *debtor*) to pay the factor, and then either releases the rest (the
//! reserve, less the fee) to the client or hands the debt to collections.
//!
//! The stages, each shown by the `status` query and the run's status line:
//!
//! 1. `kyb_check` — know-your-business on the client; a client the company
//!    registry rejects fails the run with `KybRejected` (never retried).
//! 2. `pull_credit` — the debtor's credit report. The bureau is slow and
//!    times out (`BureauTimeout`); the retry policy tries again after 30 s,
//!    1 min, 2 min, 4 min, 8 min (six attempts in all) before the run fails
//!    with `BureauTimeout`. `DebtorUnknown` is never retried.
//! 3. The underwriter's decision, signal `decision`, raced against
//!    [`DECISION_WINDOW`] (7 days): rejected or undecided ends the run
//!    without money moving.
//! 4. `pay_advance` — the advance (the invoice amount times the advance
//!    rate) to the client. The bank call is retried; the activity passes the
//!    attempt's idempotency key to the bank, so a retry after a lost response
//!    does not pay twice.
//! 5. The debtor's payments, signal `payment`, accumulate towards the
//!    invoice amount for [`PAYMENT_TERM`] (60 days) — a spawned task receives
//!    them, [`Context::wait_until_timeout`] waits for the total.
//! 6. Paid in full: `settle` releases the reserve — everything collected less
//!    the advance and the fee — to the client. Deadline passed: `collections`
//!    opens a case for what is still outstanding.
//!
//! Amounts are integer cents; rates are basis points (8000 = 80 %).
//!
//! Input: `{"invoice_id": "INV-1042", "client": "Acme Tools Ltd", "debtor":
//! "Globex Retail", "amount_cents": 4800000, "advance_rate_bps": 8000,
//! "fee_bps": 300}`.
//!
//! Signal `decision`: `{"approved": true, "by": "Lin", "note": "..."}` (`note`
//! optional). Signal `payment`: `{"amount_cents": 1600000, "reference":
//! "GLX-88121"}`; payments arriving before the payment stage wait in the
//! signal's queue.
//!
//! Query `status` at any time: `{"stage": "awaiting_payment", "credit_score":
//! 712, "advance_cents": 3840000, "paid_cents": 1600000, "outstanding_cents":
//! 3200000, "payment_due_ms": 1772443800000, "payments": [{"amount_cents":
//! 1600000, "reference": "GLX-88121", "received_ms": 1768122000000}]}`.
//!
//! Search attributes, set at the start: `client`, `debtor`, `invoice_amount`
//! (cents).
//!
//! Output: `{"invoice_id", "outcome", "credit_score", "decided_by",
//! "advance_cents", "advance_transfer", "paid_cents", "fee_cents",
//! "reserve_released_cents", "settlement_transfer", "collections_case"}`;
//! `outcome` is `settled`, `in_collections`, `rejected` or `no_decision`,
//! and the fields a path did not reach are `0` or `null`.
//!
//! Activities and their JSON:
//! - `kyb_check` `{"client"}` → `{"company_number"}`;
//! - `pull_credit` `{"debtor", "exposure_cents"}` → `{"score"}`;
//! - `pay_advance` `{"invoice_id", "client", "amount_cents"}` → `{"transfer_id"}`;
//! - `settle` `{"invoice_id", "client", "collected_cents", "advance_cents",
//!   "fee_cents", "release_cents"}` → `{"transfer_id"}`;
//! - `collections` `{"invoice_id", "debtor", "outstanding_cents",
//!   "paid_cents"}` → `{"case_id"}`.

use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};
use weft_sdk::{Context, Either, RetryPolicy, WorkflowError, select};

/// How long the underwriter has to decide.
pub const DECISION_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long the debtor has to pay, counted from the advance.
pub const PAYMENT_TERM: Duration = Duration::from_secs(60 * 24 * 3600);

/// Basis points in one whole.
const BPS: u64 = 10_000;

/// The invoice the client offers to the factor.
#[derive(Deserialize)]
struct Invoice {
    invoice_id: String,
    client: String,
    debtor: String,
    amount_cents: u64,
    /// The share of the amount advanced at once.
    advance_rate_bps: u64,
    /// The factor's fee, a share of the amount.
    fee_bps: u64,
}

#[derive(Serialize)]
struct KybRequest<'a> {
    client: &'a str,
}

#[derive(Deserialize)]
struct KybResult {
    company_number: String,
}

#[derive(Serialize)]
struct CreditRequest<'a> {
    debtor: &'a str,
    exposure_cents: u64,
}

#[derive(Deserialize)]
struct CreditReport {
    score: u32,
}

/// The payload of signal `decision`.
#[derive(Deserialize)]
struct Decision {
    approved: bool,
    by: String,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Serialize)]
struct AdvanceRequest<'a> {
    invoice_id: &'a str,
    client: &'a str,
    amount_cents: u64,
}

#[derive(Deserialize)]
struct Transfer {
    transfer_id: String,
}

/// The payload of signal `payment`, as the status query shows it (with the
/// workflow time it was received).
#[derive(Clone, Deserialize, Serialize)]
struct Payment {
    amount_cents: u64,
    reference: String,
    #[serde(default)]
    received_ms: u64,
}

#[derive(Serialize)]
struct SettleRequest<'a> {
    invoice_id: &'a str,
    client: &'a str,
    collected_cents: u64,
    advance_cents: u64,
    fee_cents: u64,
    release_cents: u64,
}

#[derive(Serialize)]
struct CollectionsRequest<'a> {
    invoice_id: &'a str,
    debtor: &'a str,
    outstanding_cents: u64,
    paid_cents: u64,
}

#[derive(Deserialize)]
struct CollectionsCase {
    case_id: String,
}

#[derive(Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Stage {
    KybCheck,
    CreditCheck,
    AwaitingDecision,
    PayingAdvance,
    AwaitingPayment,
    Settling,
    OpeningCollections,
    Settled,
    InCollections,
    Rejected,
    NoDecision,
}

/// What the `status` query answers.
#[derive(Clone, Serialize)]
struct Status {
    stage: Stage,
    credit_score: Option<u32>,
    advance_cents: Option<u64>,
    paid_cents: u64,
    outstanding_cents: u64,
    payment_due_ms: Option<u64>,
    payments: Vec<Payment>,
}

#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Settled,
    InCollections,
    Rejected,
    NoDecision,
}

/// The workflow's output.
#[derive(Serialize)]
struct Settlement {
    invoice_id: String,
    outcome: Outcome,
    credit_score: u32,
    decided_by: Option<String>,
    advance_cents: u64,
    advance_transfer: Option<String>,
    paid_cents: u64,
    fee_cents: u64,
    reserve_released_cents: u64,
    settlement_transfer: Option<String>,
    collections_case: Option<String>,
}

/// Buys `invoice`: checks the client, the debtor's credit and the
/// underwriter's decision, advances the money, waits for the debtor, and
/// settles or hands over to collections. See the [crate docs](crate).
async fn invoice_factoring(ctx: Context, invoice: Invoice) -> Result<Settlement, WorkflowError> {
    let (advance_cents, fee_cents) = terms(&invoice)?;
    ctx.upsert_search_attributes([
        ("client", invoice.client.as_str().into()),
        ("debtor", invoice.debtor.as_str().into()),
        (
            "invoice_amount",
            i64::try_from(invoice.amount_cents)
                .unwrap_or(i64::MAX)
                .into(),
        ),
    ]);
    let status = Rc::new(RefCell::new(Status {
        stage: Stage::KybCheck,
        credit_score: None,
        advance_cents: None,
        paid_cents: 0,
        outstanding_cents: invoice.amount_cents,
        payment_due_ms: None,
        payments: Vec::new(),
    }));
    ctx.on_query("status", {
        let status = Rc::clone(&status);
        move || status.borrow().clone()
    });
    let enter = |stage: Stage, line: &str| {
        status.borrow_mut().stage = stage;
        ctx.set_status_line(line);
    };

    enter(Stage::KybCheck, &format!("KYB check of {}", invoice.client));
    let kyb: KybResult = ctx
        .activity(
            "kyb_check",
            &KybRequest {
                client: &invoice.client,
            },
        )
        .start_to_close(Duration::from_secs(60))
        .retry(RetryPolicy {
            initial_interval: Duration::from_secs(10),
            maximum_attempts: 5,
            non_retryable_error_types: vec!["KybRejected".to_owned()],
            ..RetryPolicy::default()
        })
        .await?;
    ctx.log_info(&format!(
        "{} passed KYB (company number {})",
        invoice.client, kyb.company_number
    ));

    enter(
        Stage::CreditCheck,
        &format!("pulling the credit report of {}", invoice.debtor),
    );
    let credit: CreditReport = ctx
        .activity(
            "pull_credit",
            &CreditRequest {
                debtor: &invoice.debtor,
                exposure_cents: invoice.amount_cents,
            },
        )
        // The bureau answers in seconds or not at all: an attempt that hangs
        // is abandoned and retried rather than waited on.
        .start_to_close(Duration::from_secs(20))
        .retry(RetryPolicy {
            initial_interval: Duration::from_secs(30),
            backoff_coefficient: 2.0,
            maximum_interval: Duration::from_secs(10 * 60),
            maximum_attempts: 6,
            non_retryable_error_types: vec!["DebtorUnknown".to_owned()],
        })
        .await?;
    status.borrow_mut().credit_score = Some(credit.score);

    enter(
        Stage::AwaitingDecision,
        &format!(
            "awaiting the underwriter: {} owes {}, credit score {}",
            invoice.debtor,
            money(invoice.amount_cents),
            credit.score
        ),
    );
    let decisions = ctx.signal::<Decision>("decision");
    let decision = match select(decisions.recv(), ctx.sleep(DECISION_WINDOW)).await {
        Either::Left(decision) => decision,
        Either::Right(()) => {
            ctx.log_warn("no underwriter decided within the decision window");
            enter(Stage::NoDecision, "closed: no decision within 7 days");
            return Ok(Settlement::unfunded(
                &invoice,
                Outcome::NoDecision,
                credit.score,
                None,
            ));
        }
    };
    if !decision.approved {
        let note = decision.note.as_deref().unwrap_or("no reason given");
        enter(
            Stage::Rejected,
            &format!("rejected by {}: {note}", decision.by),
        );
        return Ok(Settlement::unfunded(
            &invoice,
            Outcome::Rejected,
            credit.score,
            Some(decision.by),
        ));
    }

    enter(
        Stage::PayingAdvance,
        &format!(
            "approved by {}: paying the advance of {}",
            decision.by,
            money(advance_cents)
        ),
    );
    let advance: Transfer = ctx
        .activity(
            "pay_advance",
            &AdvanceRequest {
                invoice_id: &invoice.invoice_id,
                client: &invoice.client,
                amount_cents: advance_cents,
            },
        )
        .start_to_close(Duration::from_secs(60))
        .retry(RetryPolicy {
            initial_interval: Duration::from_secs(15),
            maximum_attempts: 10,
            ..RetryPolicy::default()
        })
        .await?;
    status.borrow_mut().advance_cents = Some(advance_cents);

    let due_ms = millis_since_epoch(&ctx) + PAYMENT_TERM.as_millis() as u64;
    status.borrow_mut().payment_due_ms = Some(due_ms);
    enter(
        Stage::AwaitingPayment,
        &format!(
            "awaiting {} from {}: nothing received yet",
            money(invoice.amount_cents),
            invoice.debtor
        ),
    );
    let paid = Rc::new(Cell::new(0u64));
    ctx.spawn(receive_payments(
        ctx.clone(),
        invoice.amount_cents,
        Rc::clone(&paid),
        Rc::clone(&status),
    ));
    let owed = invoice.amount_cents;
    let in_full = ctx
        .wait_until_timeout(
            {
                let paid = Rc::clone(&paid);
                move || paid.get() >= owed
            },
            PAYMENT_TERM,
        )
        .await;
    let collected = paid.get();

    if in_full {
        // An overpayment goes back to the client with the reserve.
        let release_cents = collected - advance_cents - fee_cents;
        enter(
            Stage::Settling,
            &format!(
                "paid in full: releasing the reserve of {} to {}",
                money(release_cents),
                invoice.client
            ),
        );
        let settlement: Transfer = ctx
            .activity(
                "settle",
                &SettleRequest {
                    invoice_id: &invoice.invoice_id,
                    client: &invoice.client,
                    collected_cents: collected,
                    advance_cents,
                    fee_cents,
                    release_cents,
                },
            )
            .start_to_close(Duration::from_secs(60))
            .retry(RetryPolicy {
                initial_interval: Duration::from_secs(15),
                maximum_attempts: 10,
                ..RetryPolicy::default()
            })
            .await?;
        enter(
            Stage::Settled,
            &format!("settled: {} released", money(release_cents)),
        );
        return Ok(Settlement {
            invoice_id: invoice.invoice_id,
            outcome: Outcome::Settled,
            credit_score: credit.score,
            decided_by: Some(decision.by),
            advance_cents,
            advance_transfer: Some(advance.transfer_id),
            paid_cents: collected,
            fee_cents,
            reserve_released_cents: release_cents,
            settlement_transfer: Some(settlement.transfer_id),
            collections_case: None,
        });
    }

    let outstanding = owed - collected;
    enter(
        Stage::OpeningCollections,
        &format!(
            "overdue: handing {} outstanding to collections",
            money(outstanding)
        ),
    );
    let case: CollectionsCase = ctx
        .activity(
            "collections",
            &CollectionsRequest {
                invoice_id: &invoice.invoice_id,
                debtor: &invoice.debtor,
                outstanding_cents: outstanding,
                paid_cents: collected,
            },
        )
        .start_to_close(Duration::from_secs(60))
        .retry(RetryPolicy {
            initial_interval: Duration::from_secs(60),
            maximum_attempts: 10,
            ..RetryPolicy::default()
        })
        .await?;
    enter(
        Stage::InCollections,
        &format!("in collections: case {}", case.case_id),
    );
    Ok(Settlement {
        invoice_id: invoice.invoice_id,
        outcome: Outcome::InCollections,
        credit_score: credit.score,
        decided_by: Some(decision.by),
        advance_cents,
        advance_transfer: Some(advance.transfer_id),
        paid_cents: collected,
        fee_cents,
        reserve_released_cents: 0,
        settlement_transfer: None,
        collections_case: Some(case.case_id),
    })
}

/// Receives the debtor's payments for as long as the run lasts, adding each
/// to `paid` and to the status.
async fn receive_payments(
    ctx: Context,
    owed: u64,
    paid: Rc<Cell<u64>>,
    status: Rc<RefCell<Status>>,
) {
    let payments = ctx.signal::<Payment>("payment");
    loop {
        let mut payment = payments.recv().await;
        if payment.amount_cents == 0 {
            ctx.log_warn(&format!(
                "ignored payment {}: its amount is zero",
                payment.reference
            ));
            continue;
        }
        payment.received_ms = millis_since_epoch(&ctx);
        paid.set(paid.get().saturating_add(payment.amount_cents));
        let mut status = status.borrow_mut();
        status.paid_cents = paid.get();
        status.outstanding_cents = owed.saturating_sub(paid.get());
        let count = status.payments.len() + 1;
        ctx.set_status_line(&format!(
            "awaiting payment: {} of {} received ({count} payment{})",
            money(paid.get()),
            money(owed),
            if count == 1 { "" } else { "s" }
        ));
        status.payments.push(payment);
    }
}

/// The advance and the fee of `invoice`, or why its terms make no sense.
fn terms(invoice: &Invoice) -> Result<(u64, u64), WorkflowError> {
    let invalid = |why: String| {
        WorkflowError::new(
            "InvalidInvoice",
            format!(
                "invoice {} cannot be factored: {why}; correct the input and start a new run",
                invoice.invoice_id
            ),
        )
    };
    if invoice.amount_cents == 0 {
        return Err(invalid("its amount is zero".to_owned()));
    }
    let share = |bps: u64| {
        invoice
            .amount_cents
            .checked_mul(bps)
            .map(|n| n / BPS)
            .ok_or_else(|| invalid(format!("its amount {} is too large", invoice.amount_cents)))
    };
    let advance = share(invoice.advance_rate_bps)?;
    let fee = share(invoice.fee_bps)?;
    if advance + fee > invoice.amount_cents {
        return Err(invalid(format!(
            "the advance ({} bps) and the fee ({} bps) add up to more than the invoice",
            invoice.advance_rate_bps, invoice.fee_bps
        )));
    }
    Ok((advance, fee))
}

impl Settlement {
    /// The output of a run that ended before any money moved.
    fn unfunded(
        invoice: &Invoice,
        outcome: Outcome,
        credit_score: u32,
        decided_by: Option<String>,
    ) -> Self {
        Self {
            invoice_id: invoice.invoice_id.clone(),
            outcome,
            credit_score,
            decided_by,
            advance_cents: 0,
            advance_transfer: None,
            paid_cents: 0,
            fee_cents: 0,
            reserve_released_cents: 0,
            settlement_transfer: None,
            collections_case: None,
        }
    }
}

/// Workflow time in ms since the Unix epoch.
fn millis_since_epoch(ctx: &Context) -> u64 {
    ctx.now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `4800000` cents as `48,000.00`.
fn money(cents: u64) -> String {
    let units = (cents / 100).to_string();
    let mut grouped = String::new();
    for (i, digit) in units.chars().enumerate() {
        if i > 0 && (units.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{grouped}.{:02}", cents % 100)
}

weft_sdk::export_workflows!(invoice_factoring);
