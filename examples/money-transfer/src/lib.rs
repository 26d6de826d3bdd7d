//! The money-transfer example's activities: an in-memory ledger with
//! injected failures, and the `debit`, `credit` and `reverse_debit`
//! activities the `transfer` workflow calls (`workflow/src/lib.rs`).
//!
//! The ledger applies each posting at most once per idempotency key: a retry
//! of an attempt whose answer was lost finds its key and returns the entry it
//! already made. That is what makes the workflow's at-least-once activities
//! exactly-once in money.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use weft::{Activities, ActivityContext, ActivityError};

/// One account of the ledger.
#[derive(Clone, Debug, PartialEq)]
pub struct Account {
    pub balance_cents: i64,
    pub closed: bool,
}

#[derive(Default)]
struct Books {
    accounts: BTreeMap<String, Account>,
    /// Idempotency key → the entry made for it.
    applied: BTreeMap<String, String>,
    entries: Vec<String>,
    /// Debits whose answer is lost after they are applied (a timeout on the wire).
    lose_debit_answers: u32,
}

/// The ledger, shared by the activities and the test or demo that reads it.
#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<Books>>);

impl Ledger {
    /// A ledger with these accounts: (name, balance in cents, closed).
    pub fn with_accounts(accounts: &[(&str, i64, bool)]) -> Self {
        let ledger = Ledger::default();
        {
            let mut books = ledger.0.lock().expect("ledger poisoned");
            for (name, balance_cents, closed) in accounts {
                books.accounts.insert(
                    (*name).to_owned(),
                    Account {
                        balance_cents: *balance_cents,
                        closed: *closed,
                    },
                );
            }
        }
        ledger
    }

    /// The next `n` debits are applied and then answer with a timeout.
    pub fn lose_debit_answers(&self, n: u32) {
        self.0.lock().expect("ledger poisoned").lose_debit_answers = n;
    }

    pub fn balance(&self, account: &str) -> i64 {
        self.0
            .lock()
            .expect("ledger poisoned")
            .accounts
            .get(account)
            .map_or(0, |a| a.balance_cents)
    }

    /// Every entry made, in order, as `"<id> <kind> <account> <amount>"`.
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().expect("ledger poisoned").entries.clone()
    }

    /// Applies a posting once per key: `delta` is added to the account.
    fn post(
        &self,
        key: &str,
        kind: &str,
        posting: &Posting,
        delta: i64,
    ) -> Result<String, ActivityError> {
        let mut books = self.0.lock().expect("ledger poisoned");
        if let Some(entry) = books.applied.get(key) {
            return Ok(entry.clone());
        }
        let account = books
            .accounts
            .get(&posting.account)
            .cloned()
            .ok_or_else(|| {
                ActivityError::non_retryable(
                    "AccountClosed",
                    format!("no account {}", posting.account),
                )
            })?;
        if account.closed {
            return Err(ActivityError::non_retryable(
                "AccountClosed",
                format!("account {} is closed", posting.account),
            ));
        }
        if account.balance_cents + delta < 0 {
            return Err(ActivityError::non_retryable(
                "InsufficientFunds",
                format!(
                    "account {} holds {} cents, {} were asked",
                    posting.account, account.balance_cents, -delta
                ),
            ));
        }
        let id = format!("E{}", books.entries.len() + 1);
        books
            .accounts
            .get_mut(&posting.account)
            .expect("checked above")
            .balance_cents += delta;
        books.entries.push(format!(
            "{id} {kind} {} {} ({})",
            posting.account, delta, posting.reference
        ));
        books.applied.insert(key.to_owned(), id.clone());
        Ok(id)
    }
}

/// What the workflow sends each ledger activity.
#[derive(Deserialize)]
pub struct Posting {
    pub account: String,
    pub amount_cents: u64,
    pub reference: String,
}

fn cents(posting: &Posting) -> i64 {
    i64::try_from(posting.amount_cents).unwrap_or(i64::MAX)
}

/// The `debit`, `credit` and `reverse_debit` activities on `ledger`.
pub fn activities(ledger: &Ledger) -> Activities {
    let mut a = Activities::new();
    let l = ledger.clone();
    a.register("debit", move |ctx: ActivityContext, p: Posting| {
        let l = l.clone();
        async move {
            let entry = l.post(&ctx.idempotency_key(), "debit", &p, -cents(&p))?;
            let mut books = l.0.lock().expect("ledger poisoned");
            if books.lose_debit_answers > 0 {
                books.lose_debit_answers -= 1;
                return Err(ActivityError::retryable(
                    "Timeout",
                    format!("the ledger applied {entry} but its answer was lost"),
                ));
            }
            Ok(entry)
        }
    });
    let l = ledger.clone();
    a.register("credit", move |ctx: ActivityContext, p: Posting| {
        let l = l.clone();
        async move { l.post(&ctx.idempotency_key(), "credit", &p, cents(&p)) }
    });
    let l = ledger.clone();
    a.register("reverse_debit", move |ctx: ActivityContext, p: Posting| {
        let l = l.clone();
        async move { l.post(&ctx.idempotency_key(), "reversal", &p, cents(&p)) }
    });
    a
}
