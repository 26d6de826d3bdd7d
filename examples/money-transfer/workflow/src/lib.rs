//! The `transfer` workflow: moves money between two accounts of a ledger,
//! debit first, then credit; if the credit fails for good, the debit is
//! reversed so that no money is lost in between.
//!
//! Every ledger call is an activity retried by policy (1 s, doubling, five
//! attempts). `InsufficientFunds` and `AccountClosed` are never retried. The
//! ledger receives each attempt's idempotency key, so a debit whose answer was
//! lost (the ledger applied it, then the connection timed out) is not applied
//! again when it is retried.
//!
//! Input: `{"transfer_id": "T-1", "from": "alice", "to": "bob", "amount_cents": 2500}`.
//! Output: `{"transfer_id": "T-1", "debit": "<ledger entry>", "credit": "<ledger entry>"}`.
//! Failure: the debit's error (nothing moved), or the credit's error after
//! the debit was reversed.
//!
//! Activities it calls, each with `{"account", "amount_cents", "reference"}`
//! and returning the ledger entry's id: `debit`, `credit`, and
//! `reverse_debit` (a credit back to the source, retried until it succeeds).

use serde::{Deserialize, Serialize};
use std::time::Duration;
use weft_sdk::{Context, RetryPolicy, WorkflowError};

#[derive(Deserialize)]
struct Transfer {
    transfer_id: String,
    from: String,
    to: String,
    amount_cents: u64,
}

/// What each ledger activity receives.
#[derive(Serialize)]
struct Posting<'a> {
    account: &'a str,
    amount_cents: u64,
    reference: &'a str,
}

#[derive(Serialize)]
struct Receipt {
    transfer_id: String,
    debit: String,
    credit: String,
}

fn ledger_policy() -> RetryPolicy {
    RetryPolicy {
        initial_interval: Duration::from_secs(1),
        maximum_attempts: 5,
        non_retryable_error_types: vec!["InsufficientFunds".into(), "AccountClosed".into()],
        ..RetryPolicy::default()
    }
}

/// Debits `from`, credits `to`; reverses the debit if the credit fails for good.
async fn transfer(ctx: Context, t: Transfer) -> Result<Receipt, WorkflowError> {
    let posting = |account| Posting {
        account,
        amount_cents: t.amount_cents,
        reference: &t.transfer_id,
    };
    ctx.set_status_line("debiting");
    let debit: String = ctx
        .activity("debit", &posting(&t.from))
        .retry(ledger_policy())
        .await?;
    ctx.set_status_line("crediting");
    let credit = ctx
        .activity::<String>("credit", &posting(&t.to))
        .retry(ledger_policy())
        .await;
    match credit {
        Ok(credit) => {
            ctx.set_status_line("done");
            Ok(Receipt {
                transfer_id: t.transfer_id,
                debit,
                credit,
            })
        }
        Err(failed) => {
            // The money left `from`: it must go back, however long the ledger takes.
            ctx.set_status_line("reversing the debit");
            let _: String = ctx
                .activity("reverse_debit", &posting(&t.from))
                .retry(RetryPolicy {
                    initial_interval: Duration::from_secs(1),
                    maximum_interval: Duration::from_secs(60),
                    ..RetryPolicy::default()
                })
                .await?;
            ctx.set_status_line("reversed");
            Err(failed.into())
        }
    }
}

weft_sdk::export_workflows!(transfer);
