//! The `loan_application` workflow: a consumer loan application from the
//! moment it is submitted to the letter that tells the applicant the outcome.
//!
//! 1. **Documents.** While required documents are missing, the applicant is
//!    reminded by e-mail (`send_reminder`) at once and then every
//!    [`REMINDER_INTERVAL`] (24 hours), at most [`REMINDERS`] (7) times,
//!    until `documents` signals complete the file. A week after submission
//!    with the file still incomplete, the application is withdrawn. The
//!    reminders keep to the schedule of the submission time, however long
//!    the mail server takes.
//! 2. **Fraud check** (`fraud_check`). A flagged applicant fails the run
//!    with `FraudSuspected`: the case goes to the fraud team, and the
//!    applicant gets no letter from this workflow.
//! 3. **Decision.** An amount below the input's `auto_approve_below` is
//!    approved automatically. Above it, an underwriter decides — by signal
//!    `decision` or by update `decide` — within [`DECISION_WINDOW`] (5 days,
//!    the lender's promise to answer within a working week); after that the
//!    application expires and the applicant is told to apply again.
//! 4. **Letter** (`notify_applicant`) with the outcome, unless fraud.
//!
//! Signal or update? Both carry the same decision. A signal is
//! fire-and-forget: one sent early waits in its queue and is taken when the
//! application reaches the decision. An update is answered: its validator
//! refuses a decision while the file is incomplete, during the fraud check,
//! for an amount that needs none, and once the application is decided — the
//! refusal is never recorded — and an accepted one answers the outcome.
//!
//! Input: `{"application_id": "LA-2031", "applicant": "Grace Hopper",
//! "email": "grace@example.com", "amount": 25000, "auto_approve_below":
//! 10000, "required_documents": ["id", "payslip", "bank_statement"],
//! "submitted_documents": ["id"]}` (amounts in whole currency units).
//!
//! Signal `documents`: `{"documents": ["payslip"]}`, adding to the file.
//! Signal `decision` and update `decide`: `{"approved": true, "by": "Lin",
//! "reason": "..."}` (`reason` optional); `decide` answers
//! `{"application_id", "outcome"}`.
//!
//! Query `status` at any time: `{"stage": "awaiting_documents",
//! "missing_documents": ["payslip"], "reminders_sent": 2, "outcome": null}`.
//! Stages: `awaiting_documents`, `fraud_check`, `awaiting_decision`,
//! `notifying`, `closed`, `fraud_suspected`.
//!
//! Search attributes, set at the start: `applicant`, `amount`.
//!
//! Output: `{"application_id", "outcome", "decided_by", "reason",
//! "reminders_sent"}`; `outcome` is `approved`, `rejected`, `withdrawn` or
//! `expired`; `decided_by` is the underwriter, `automatic`, or `null`.
//!
//! Activities and their JSON:
//! - `send_reminder` `{"application_id", "applicant", "email", "missing",
//!   "reminder", "withdraw_at_ms"}` → `{"message_id"}`;
//! - `fraud_check` `{"application_id", "applicant", "amount"}` →
//!   `{"flagged", "reason"}`;
//! - `notify_applicant` `{"application_id", "applicant", "email",
//!   "outcome", "reason"}` → `{"message_id"}`.

use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};
use weft_sdk::{Context, RetryPolicy, WorkflowError};

/// Time between reminders.
pub const REMINDER_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Reminders at most; the file must be complete within this many intervals
/// of the submission.
pub const REMINDERS: u32 = 7;
/// How long an underwriter has to decide.
pub const DECISION_WINDOW: Duration = Duration::from_secs(5 * 24 * 3600);

/// What `decided_by` says of an automatic approval.
const AUTOMATIC: &str = "automatic";

#[derive(Deserialize)]
struct Application {
    application_id: String,
    applicant: String,
    email: String,
    amount: u64,
    /// Amounts below this are approved without an underwriter.
    auto_approve_below: u64,
    required_documents: BTreeSet<String>,
    #[serde(default)]
    submitted_documents: BTreeSet<String>,
}

/// The payload of signal `documents`.
#[derive(Deserialize)]
struct Documents {
    documents: Vec<String>,
}

/// The payload of signal `decision` and update `decide`.
#[derive(Clone, Deserialize)]
struct Decision {
    approved: bool,
    by: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Stage {
    AwaitingDocuments,
    FraudCheck,
    AwaitingDecision,
    Notifying,
    Closed,
    FraudSuspected,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Approved,
    Rejected,
    Withdrawn,
    Expired,
}

/// The workflow's state, shared with its query, update and signal tasks.
struct State {
    stage: Stage,
    required: BTreeSet<String>,
    received: BTreeSet<String>,
    reminders_sent: u32,
    /// The underwriter's decision, once one arrived (by signal or update).
    decision: Option<Decision>,
    outcome: Option<Outcome>,
    /// Whether the amount is approved without an underwriter.
    automatic: bool,
}

impl State {
    fn missing(&self) -> Vec<String> {
        self.required.difference(&self.received).cloned().collect()
    }

    fn complete(&self) -> bool {
        self.required.is_subset(&self.received)
    }

    /// Why update `decide` cannot be accepted now, if it cannot.
    fn refuse_decision(&self, application_id: &str) -> Result<(), String> {
        if let Some(decision) = &self.decision {
            let verb = if decision.approved {
                "approved"
            } else {
                "rejected"
            };
            return Err(format!(
                "application {application_id} was already {verb} by {}",
                decision.by
            ));
        }
        match self.stage {
            Stage::AwaitingDecision => Ok(()),
            Stage::AwaitingDocuments => Err(format!(
                "the file of application {application_id} is incomplete (missing: {}); decide once the documents are in",
                self.missing().join(", ")
            )),
            _ if self.automatic => Err(format!(
                "application {application_id} needs no decision: its amount is approved automatically"
            )),
            Stage::FraudCheck => Err(format!(
                "application {application_id} is in its fraud check; decide once it has passed"
            )),
            Stage::Notifying | Stage::Closed | Stage::FraudSuspected => Err(format!(
                "application {application_id} is closed ({}); it takes no more decisions",
                self.outcome.map_or("fraud suspected", Outcome::as_str)
            )),
        }
    }
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Approved => "approved",
            Outcome::Rejected => "rejected",
            Outcome::Withdrawn => "withdrawn",
            Outcome::Expired => "expired",
        }
    }
}

/// What the `status` query answers.
#[derive(Serialize)]
struct Status {
    stage: Stage,
    missing_documents: Vec<String>,
    reminders_sent: u32,
    outcome: Option<Outcome>,
}

/// What update `decide` answers.
#[derive(Serialize)]
struct Decided {
    application_id: String,
    outcome: Outcome,
}

#[derive(Serialize)]
struct Reminder<'a> {
    application_id: &'a str,
    applicant: &'a str,
    email: &'a str,
    missing: Vec<String>,
    /// 1 for the first.
    reminder: u32,
    withdraw_at_ms: u64,
}

#[derive(Deserialize)]
struct Sent {
    message_id: String,
}

#[derive(Serialize)]
struct FraudRequest<'a> {
    application_id: &'a str,
    applicant: &'a str,
    amount: u64,
}

#[derive(Deserialize)]
struct FraudVerdict {
    flagged: bool,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Serialize)]
struct Letter<'a> {
    application_id: &'a str,
    applicant: &'a str,
    email: &'a str,
    outcome: Outcome,
    reason: &'a str,
}

/// The workflow's output.
#[derive(Serialize)]
struct Verdict {
    application_id: String,
    outcome: Outcome,
    decided_by: Option<String>,
    reason: String,
    reminders_sent: u32,
}

/// Takes `application` from submission to the applicant's letter. See the
/// [crate docs](crate).
async fn loan_application(
    ctx: Context,
    application: Application,
) -> Result<Verdict, WorkflowError> {
    if application.amount == 0 {
        return Err(WorkflowError::new(
            "InvalidApplication",
            format!(
                "application {} asks for an amount of 0; correct the input and start a new run",
                application.application_id
            ),
        ));
    }
    ctx.upsert_search_attributes([
        ("applicant", application.applicant.as_str().into()),
        (
            "amount",
            i64::try_from(application.amount).unwrap_or(i64::MAX).into(),
        ),
    ]);
    let state = Rc::new(RefCell::new(State {
        stage: Stage::AwaitingDocuments,
        required: application.required_documents.clone(),
        received: application.submitted_documents.clone(),
        reminders_sent: 0,
        decision: None,
        outcome: None,
        automatic: application.amount < application.auto_approve_below,
    }));
    ctx.on_query("status", {
        let state = Rc::clone(&state);
        move || {
            let state = state.borrow();
            Status {
                stage: state.stage,
                missing_documents: state.missing(),
                reminders_sent: state.reminders_sent,
                outcome: state.outcome,
            }
        }
    });
    register_decide(&ctx, &application.application_id, &state);
    ctx.spawn(receive_documents(ctx.clone(), Rc::clone(&state)));

    let application_id = application.application_id.as_str();
    let enter = |stage: Stage, line: &str| {
        state.borrow_mut().stage = stage;
        ctx.set_status_line(line);
    };

    // 1. Documents: remind on the submission's daily schedule until complete.
    let submitted_ms = now_ms(&ctx);
    let withdraw_at_ms = submitted_ms + millis(REMINDER_INTERVAL) * u64::from(REMINDERS);
    let complete = {
        let state = Rc::clone(&state);
        move || state.borrow().complete()
    };
    for reminder in 1..=REMINDERS {
        if complete() {
            break;
        }
        let missing = state.borrow().missing();
        enter(
            Stage::AwaitingDocuments,
            &format!(
                "awaiting documents: {} missing; reminder {reminder} of {REMINDERS} going out",
                missing.join(", ")
            ),
        );
        let sent: Sent = ctx
            .activity(
                "send_reminder",
                &Reminder {
                    application_id,
                    applicant: &application.applicant,
                    email: &application.email,
                    missing,
                    reminder,
                    withdraw_at_ms,
                },
            )
            .start_to_close(Duration::from_secs(30))
            .retry(mail_retry())
            .await?;
        state.borrow_mut().reminders_sent = reminder;
        ctx.log_info(&format!("reminder {reminder} sent as {}", sent.message_id));
        let next_ms = submitted_ms + millis(REMINDER_INTERVAL) * u64::from(reminder);
        let wait = Duration::from_millis(next_ms.saturating_sub(now_ms(&ctx)));
        if ctx.wait_until_timeout(complete.clone(), wait).await {
            break;
        }
    }
    if !complete() {
        let reason = format!(
            "the file was still incomplete a week after submission (missing: {})",
            state.borrow().missing().join(", ")
        );
        return close(&ctx, &application, &state, Outcome::Withdrawn, None, reason).await;
    }

    // 2. Fraud check.
    enter(Stage::FraudCheck, "file complete: fraud check");
    let fraud: FraudVerdict = ctx
        .activity(
            "fraud_check",
            &FraudRequest {
                application_id,
                applicant: &application.applicant,
                amount: application.amount,
            },
        )
        .start_to_close(Duration::from_secs(60))
        .retry(RetryPolicy {
            initial_interval: Duration::from_secs(60),
            maximum_attempts: 10,
            ..RetryPolicy::default()
        })
        .await?;
    if fraud.flagged {
        let reason = fraud.reason.unwrap_or_else(|| "no reason given".to_owned());
        enter(
            Stage::FraudSuspected,
            &format!("flagged by the fraud check: {reason}"),
        );
        return Err(WorkflowError::new(
            "FraudSuspected",
            format!(
                "application {application_id} was flagged by the fraud check ({reason}); it goes to the fraud team, not to an underwriter"
            ),
        ));
    }

    // 3. Decision.
    if state.borrow().automatic {
        let reason = format!(
            "amounts below {} are approved automatically",
            application.auto_approve_below
        );
        let by = Some(AUTOMATIC.to_owned());
        return close(&ctx, &application, &state, Outcome::Approved, by, reason).await;
    }
    enter(
        Stage::AwaitingDecision,
        &format!(
            "awaiting an underwriter's decision on {}",
            application.amount
        ),
    );
    ctx.spawn(receive_decisions(ctx.clone(), Rc::clone(&state)));
    let decided = ctx
        .wait_until_timeout(
            {
                let state = Rc::clone(&state);
                move || state.borrow().decision.is_some()
            },
            DECISION_WINDOW,
        )
        .await;
    let decision = state.borrow().decision.clone();
    match decision {
        Some(decision) if decided => {
            let outcome = if decision.approved {
                Outcome::Approved
            } else {
                Outcome::Rejected
            };
            let reason = decision
                .reason
                .unwrap_or_else(|| format!("decided by {}", decision.by));
            close(
                &ctx,
                &application,
                &state,
                outcome,
                Some(decision.by),
                reason,
            )
            .await
        }
        _ => {
            ctx.log_warn("no underwriter decided within the decision window");
            let reason =
                "no underwriter decided within 5 days; you are welcome to apply again".to_owned();
            close(&ctx, &application, &state, Outcome::Expired, None, reason).await
        }
    }
}

/// 4. Tells the applicant and ends the run with the verdict.
async fn close(
    ctx: &Context,
    application: &Application,
    state: &Rc<RefCell<State>>,
    outcome: Outcome,
    decided_by: Option<String>,
    reason: String,
) -> Result<Verdict, WorkflowError> {
    {
        let mut state = state.borrow_mut();
        state.stage = Stage::Notifying;
        state.outcome = Some(outcome);
    }
    ctx.set_status_line(&format!("{}: writing to the applicant", outcome.as_str()));
    let letter: Sent = ctx
        .activity(
            "notify_applicant",
            &Letter {
                application_id: &application.application_id,
                applicant: &application.applicant,
                email: &application.email,
                outcome,
                reason: &reason,
            },
        )
        .start_to_close(Duration::from_secs(30))
        .retry(mail_retry())
        .await?;
    state.borrow_mut().stage = Stage::Closed;
    ctx.set_status_line(&format!(
        "{}: {reason} (letter {})",
        outcome.as_str(),
        letter.message_id
    ));
    Ok(Verdict {
        application_id: application.application_id.clone(),
        outcome,
        decided_by,
        reason,
        reminders_sent: state.borrow().reminders_sent,
    })
}

/// Registers update `decide`. Registered at the start so that an early
/// update is refused with the reason, not as an unknown update.
fn register_decide(ctx: &Context, application_id: &str, state: &Rc<RefCell<State>>) {
    let validate = {
        let (state, id) = (Rc::clone(state), application_id.to_owned());
        move |_: &Decision| state.borrow().refuse_decision(&id)
    };
    let handle = {
        let (state, id) = (Rc::clone(state), application_id.to_owned());
        move |decision: Decision| {
            let (state, id) = (Rc::clone(&state), id.clone());
            async move {
                // Accepted, but something else may have got in first between
                // validation and delivery (a signal, another update, the timeout).
                state
                    .borrow()
                    .refuse_decision(&id)
                    .map_err(|why| WorkflowError::new("DecisionRefused", why))?;
                let outcome = if decision.approved {
                    Outcome::Approved
                } else {
                    Outcome::Rejected
                };
                state.borrow_mut().decision = Some(decision);
                Ok(Decided {
                    application_id: id,
                    outcome,
                })
            }
        }
    };
    ctx.on_update_validated("decide", validate, handle);
}

/// Adds the documents of every `documents` signal to the file.
async fn receive_documents(ctx: Context, state: Rc<RefCell<State>>) {
    let signal = ctx.signal::<Documents>("documents");
    loop {
        let documents = signal.recv().await;
        let mut state = state.borrow_mut();
        for document in documents.documents {
            if !state.required.contains(&document) {
                ctx.log_warn(&format!(
                    "received document {document}, which the application does not require"
                ));
            }
            state.received.insert(document);
        }
        if state.stage == Stage::AwaitingDocuments {
            let missing = state.missing();
            ctx.set_status_line(&if missing.is_empty() {
                "awaiting documents: the file is complete".to_owned()
            } else {
                format!("awaiting documents: {} missing", missing.join(", "))
            });
        }
    }
}

/// Takes `decision` signals once the application awaits one; the first
/// decision (by signal or update) stands.
async fn receive_decisions(ctx: Context, state: Rc<RefCell<State>>) {
    let signal = ctx.signal::<Decision>("decision");
    loop {
        let decision = signal.recv().await;
        let mut state = state.borrow_mut();
        if state.decision.is_some() {
            ctx.log_warn(&format!(
                "ignored the decision signal of {}: the application is already decided",
                decision.by
            ));
        } else {
            state.decision = Some(decision);
        }
    }
}

/// Mail servers go away for minutes, not days.
fn mail_retry() -> RetryPolicy {
    RetryPolicy {
        initial_interval: Duration::from_secs(30),
        maximum_interval: Duration::from_secs(15 * 60),
        maximum_attempts: 20,
        ..RetryPolicy::default()
    }
}

fn now_ms(ctx: &Context) -> u64 {
    ctx.now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

weft_sdk::export_workflows!(loan_application);
