//! The `approval` workflow: a loan application that is credit-checked, waits
//! out a cooling-off period, then waits for a human decision (a signal) — but
//! not forever — and notifies the applicant.
//!
//! It shows each building block once: an activity with a retry policy whose
//! non-retryable error fails the run, a durable timer, a signal raced against
//! a deadline with [`select`], and a query that reads the workflow's state.
//!
//! Input: `{"applicant": "Ada", "amount": 5000, "cooling_off_ms": 1000, "decision_timeout_ms": 60000}`.
//! Signal `decision`: `{"approved": true, "by": "Grace"}`.
//! Query `status` at any time: `{"stage": "awaiting decision", "score": 712}`.
//! Output: `{"applicant": "Ada", "score": 712, "outcome": "approved", "decided_by": "Grace"}`;
//! `outcome` is `approved`, `rejected` or `timed_out` (then `decided_by` is `null`).
//!
//! Activities it calls: `check_credit` with `{"applicant", "amount"}`,
//! returning `{"score": u32}`; `notify` with `{"applicant", "outcome"}`,
//! whose output is ignored.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use weft_sdk::{Context, Either, RetryPolicy, WorkflowError, select};

/// A loan application.
#[derive(Deserialize)]
struct Application {
    applicant: String,
    amount: u64,
    /// How long to wait after the credit check before asking for a decision.
    cooling_off_ms: u64,
    /// How long to wait for the `decision` signal before giving up.
    decision_timeout_ms: u64,
}

/// The input of `check_credit`.
#[derive(Serialize)]
struct CreditCheck<'a> {
    applicant: &'a str,
    amount: u64,
}

/// The output of `check_credit`.
#[derive(Deserialize)]
struct Credit {
    score: u32,
}

/// The payload of the `decision` signal.
#[derive(Deserialize)]
struct Decision {
    approved: bool,
    by: String,
}

#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Approved,
    Rejected,
    TimedOut,
}

/// The input of `notify`.
#[derive(Serialize)]
struct Notification<'a> {
    applicant: &'a str,
    outcome: Outcome,
}

/// The workflow's output.
#[derive(Serialize)]
struct Verdict {
    applicant: String,
    score: u32,
    outcome: Outcome,
    decided_by: Option<String>,
}

/// What the `status` query answers.
#[derive(Clone, Serialize)]
struct Status {
    stage: &'static str,
    score: Option<u32>,
}

/// Checks credit, cools off, waits for a decision or the deadline, notifies.
///
/// `check_credit` is retried 1 s, 2 s, 4 s, 8 s apart (five attempts in all),
/// except when it fails with `ApplicantUnknown`; when it fails for good, the
/// run fails with the activity's error type.
async fn approval(ctx: Context, application: Application) -> Result<Verdict, WorkflowError> {
    let status = Rc::new(RefCell::new(Status {
        stage: "checking credit",
        score: None,
    }));
    ctx.on_query("status", {
        let status = Rc::clone(&status);
        move || status.borrow().clone()
    });
    let enter = |stage: &'static str| status.borrow_mut().stage = stage;

    let credit: Credit = ctx
        .activity(
            "check_credit",
            &CreditCheck {
                applicant: &application.applicant,
                amount: application.amount,
            },
        )
        .retry(RetryPolicy {
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            maximum_attempts: 5,
            non_retryable_error_types: vec!["ApplicantUnknown".to_owned()],
            ..RetryPolicy::default()
        })
        .await?;
    status.borrow_mut().score = Some(credit.score);

    enter("cooling off");
    ctx.sleep(Duration::from_millis(application.cooling_off_ms))
        .await;

    enter("awaiting decision");
    let decisions = ctx.signal::<Decision>("decision");
    let deadline = ctx.sleep(Duration::from_millis(application.decision_timeout_ms));
    let (outcome, decided_by) = match select(decisions.recv(), deadline).await {
        Either::Left(Decision { approved: true, by }) => (Outcome::Approved, Some(by)),
        Either::Left(Decision {
            approved: false,
            by,
        }) => (Outcome::Rejected, Some(by)),
        Either::Right(()) => {
            ctx.log_warn("no decision before the deadline");
            (Outcome::TimedOut, None)
        }
    };

    enter("notifying");
    let _: IgnoredAny = ctx
        .activity(
            "notify",
            &Notification {
                applicant: &application.applicant,
                outcome,
            },
        )
        .await?;

    enter("done");
    Ok(Verdict {
        applicant: application.applicant,
        score: credit.score,
        outcome,
        decided_by,
    })
}

weft_sdk::export_workflows!(approval);
