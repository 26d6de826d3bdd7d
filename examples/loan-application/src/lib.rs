//! The activities of the `loan_application` workflow, against in-memory
//! stand-ins for the outside world: a mail server and a fraud-screening
//! service.
//!
//! - [`Config`] injects failures deterministically: mail-server and
//!   fraud-service outages (retryable, so the workflow's retry policies ride
//!   them out) and applicants the fraud screening flags.
//! - [`Services`] is the world the activities act on; a test reads from it
//!   what they did: every [`Mail`] sent and the [`Journal`].
//! - [`activities`] registers `send_reminder`, `fraud_check` and
//!   `notify_applicant` with the JSON contracts the workflow's crate
//!   documents.
//!
//! ```
//! use loan_application::{Config, Services, activities};
//! let services = Services::new(Config {
//!     flagged_applicants: vec!["Mallory".into()],
//!     ..Config::default()
//! });
//! assert_eq!(activities(&services).names().len(), 3);
//! ```

mod journal;

pub use journal::{Attempt, Entry, Journal, format_time};

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, PoisonError};
use weft::{Activities, ActivityContext, ActivityError};

/// Which failures the stand-ins inject.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// How many of its first requests the mail server refuses
    /// (`MailServerUnavailable`, retryable).
    pub mail_outages: u32,
    /// How many of its first requests the fraud service refuses
    /// (`FraudServiceUnavailable`, retryable).
    pub fraud_outages: u32,
    /// Applicants the fraud screening flags.
    pub flagged_applicants: Vec<String>,
}

/// What a mail is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailKind {
    /// "We still need these documents."
    Reminder,
    /// The outcome of the application.
    Letter,
}

/// A mail the mail server accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    pub message_id: String,
    pub kind: MailKind,
    pub application_id: String,
    pub to: String,
    pub subject: String,
    /// When it was accepted, on the journal's clock.
    pub at_ms: u64,
}

/// The outside world of the workflow. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Services {
    config: Arc<Config>,
    journal: Journal,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    mail_requests: u32,
    fraud_requests: u32,
    mails: Vec<Mail>,
    /// The idempotency key of each accepted mail, by index into `mails`.
    mail_keys: Vec<String>,
}

impl Services {
    pub fn new(config: Config) -> Self {
        Self {
            config: Arc::new(config),
            journal: Journal::default(),
            state: Arc::default(),
        }
    }

    /// What the services did, in order.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Every mail the mail server accepted, in order.
    pub fn mails(&self) -> Vec<Mail> {
        self.state().mails.clone()
    }

    /// The reminders among [`mails`](Self::mails).
    pub fn reminders(&self) -> Vec<Mail> {
        self.state()
            .mails
            .iter()
            .filter(|m| m.kind == MailKind::Reminder)
            .cloned()
            .collect()
    }

    /// How many requests the fraud service received.
    pub fn fraud_requests(&self) -> u32 {
        self.state().fraud_requests
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends one mail per idempotency key: a retry after a lost answer
    /// finds the mail it already sent.
    fn send(
        &self,
        ctx: &ActivityContext,
        kind: MailKind,
        application_id: &str,
        to: &str,
        subject: String,
    ) -> Result<Sent, ActivityError> {
        let key = ctx.idempotency_key();
        let mut state = self.state();
        state.mail_requests += 1;
        if state.mail_requests <= self.config.mail_outages {
            drop(state);
            self.journal.write(
                "mail",
                ctx,
                format!("the mail server is unavailable (attempt {})", ctx.attempt()),
            );
            return Err(ActivityError::retryable(
                "MailServerUnavailable",
                format!("the mail server refused the connection for a mail to {to}"),
            ));
        }
        if let Some(i) = state.mail_keys.iter().position(|k| *k == key) {
            return Ok(Sent {
                message_id: state.mails[i].message_id.clone(),
            });
        }
        let message_id = format!("<{:04}@mail.lender.example>", state.mails.len() + 1);
        let at_ms = self.journal.now_ms();
        state.mails.push(Mail {
            message_id: message_id.clone(),
            kind,
            application_id: application_id.to_owned(),
            to: to.to_owned(),
            subject: subject.clone(),
            at_ms,
        });
        state.mail_keys.push(key);
        drop(state);
        self.journal
            .write("mail", ctx, format!("to {to}: \"{subject}\""));
        Ok(Sent { message_id })
    }

    fn fraud_check(
        &self,
        ctx: &ActivityContext,
        req: FraudRequest,
    ) -> Result<FraudVerdict, ActivityError> {
        let request = {
            let mut state = self.state();
            state.fraud_requests += 1;
            state.fraud_requests
        };
        if request <= self.config.fraud_outages {
            self.journal.write(
                "fraud",
                ctx,
                format!("the screening service is down (attempt {})", ctx.attempt()),
            );
            return Err(ActivityError::retryable(
                "FraudServiceUnavailable",
                format!(
                    "the fraud screening service did not take application {}",
                    req.application_id
                ),
            ));
        }
        let verdict = if self.config.flagged_applicants.contains(&req.applicant) {
            FraudVerdict {
                flagged: true,
                reason: Some(format!(
                    "{} matches a synthetic-identity pattern",
                    req.applicant
                )),
            }
        } else {
            FraudVerdict {
                flagged: false,
                reason: None,
            }
        };
        self.journal.write(
            "fraud",
            ctx,
            match &verdict.reason {
                Some(reason) => format!("{} on {}: flagged, {reason}", req.applicant, req.amount),
                None => format!("{} on {}: clear", req.applicant, req.amount),
            },
        );
        Ok(verdict)
    }
}

/// Registers the workflow's three activities against `services`.
pub fn activities(services: &Services) -> Activities {
    let mut activities = Activities::new();
    let s = services.clone();
    activities.register(
        "send_reminder",
        move |ctx: ActivityContext, req: ReminderRequest| {
            let s = s.clone();
            async move {
                let subject = format!(
                    "Reminder {}: application {} still needs {} (withdrawn on {} without them)",
                    req.reminder,
                    req.application_id,
                    req.missing.join(", "),
                    &format_time(req.withdraw_at_ms)[..14]
                );
                s.send(
                    &ctx,
                    MailKind::Reminder,
                    &req.application_id,
                    &req.email,
                    subject,
                )
            }
        },
    );
    let s = services.clone();
    activities.register(
        "fraud_check",
        move |ctx: ActivityContext, req: FraudRequest| {
            let s = s.clone();
            async move { s.fraud_check(&ctx, req) }
        },
    );
    let s = services.clone();
    activities.register(
        "notify_applicant",
        move |ctx: ActivityContext, req: LetterRequest| {
            let s = s.clone();
            async move {
                let subject = format!(
                    "Application {} {}: {}",
                    req.application_id, req.outcome, req.reason
                );
                s.send(
                    &ctx,
                    MailKind::Letter,
                    &req.application_id,
                    &req.email,
                    subject,
                )
            }
        },
    );
    activities
}

#[derive(Deserialize)]
struct ReminderRequest {
    application_id: String,
    email: String,
    missing: Vec<String>,
    reminder: u32,
    withdraw_at_ms: u64,
}

#[derive(Deserialize)]
struct FraudRequest {
    application_id: String,
    applicant: String,
    amount: u64,
}

#[derive(Serialize)]
struct FraudVerdict {
    flagged: bool,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct LetterRequest {
    application_id: String,
    email: String,
    outcome: String,
    reason: String,
}

#[derive(Serialize)]
struct Sent {
    message_id: String,
}
