//! The `onboarding` workflow: a new customer's first 30 days.
//!
//! 1. Day 0: the `welcome` e-mail.
//! 2. Seven days later: if the profile is still incomplete
//!    (`profile_complete`), a `nudge` e-mail.
//! 3. Twenty-three days after that (day 30): if the customer has not been
//!    active in the last 14 days (`last_active_ms`), a `win_back` offer.
//!
//! The waits are durable timers: the host may restart any number of times
//! in those 30 days. A `stage` query and the status line say where the
//! customer is; the search attribute `stage` lets an operator list, say,
//! every customer who was nudged.
//!
//! Input: `{"customer_id": "c-1", "email": "ada@example.com"}`.
//! Output: `{"customer_id": "c-1", "nudged": false, "win_back": true}`.
//!
//! Activities it calls: `send_email` with `{"to", "template"}` (returns the
//! message id), `profile_complete` with the customer id (returns a bool),
//! `last_active_ms` with the customer id (returns ms since the epoch, or null
//! when the customer was never active).

use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};
use weft_sdk::{Context, SearchValue, WorkflowError};

const DAY: Duration = Duration::from_secs(24 * 3600);
/// A customer with no activity for this long at day 30 is inactive.
const INACTIVE_AFTER: Duration = Duration::from_secs(14 * 24 * 3600);

#[derive(Deserialize)]
struct Customer {
    customer_id: String,
    email: String,
}

#[derive(Serialize)]
struct Email<'a> {
    to: &'a str,
    template: &'a str,
}

#[derive(Serialize)]
struct Summary {
    customer_id: String,
    nudged: bool,
    win_back: bool,
}

/// Moves the customer to `stage`: the query, the status line and the search attribute.
fn enter(ctx: &Context, stage: &Rc<RefCell<String>>, to: &str) {
    *stage.borrow_mut() = to.to_owned();
    ctx.set_status_line(to);
    ctx.upsert_search_attributes([("stage", SearchValue::from(to))]);
}

/// Onboards one customer over 30 days.
async fn onboarding(ctx: Context, customer: Customer) -> Result<Summary, WorkflowError> {
    let stage = Rc::new(RefCell::new(String::new()));
    ctx.on_query("stage", {
        let stage = Rc::clone(&stage);
        move || stage.borrow().clone()
    });
    let email = |template| Email {
        to: &customer.email,
        template,
    };

    let _: String = ctx.activity("send_email", &email("welcome")).await?;
    enter(&ctx, &stage, "welcomed");

    ctx.sleep(7 * DAY).await;
    let complete: bool = ctx
        .activity("profile_complete", &customer.customer_id)
        .await?;
    let nudged = !complete;
    if nudged {
        let _: String = ctx.activity("send_email", &email("nudge")).await?;
        enter(&ctx, &stage, "nudged");
    } else {
        enter(&ctx, &stage, "profile complete");
    }

    ctx.sleep(23 * DAY).await;
    let last_active: Option<u64> = ctx
        .activity("last_active_ms", &customer.customer_id)
        .await?;
    let now = ctx.now();
    let inactive = match last_active {
        None => true,
        Some(ms) => {
            let last = UNIX_EPOCH + Duration::from_millis(ms);
            now.duration_since(last).unwrap_or_default() > INACTIVE_AFTER
        }
    };
    if inactive {
        let _: String = ctx.activity("send_email", &email("win_back")).await?;
        enter(&ctx, &stage, "win-back offered");
    } else {
        enter(&ctx, &stage, "active");
    }
    Ok(Summary {
        customer_id: customer.customer_id,
        nudged,
        win_back: inactive,
    })
}

weft_sdk::export_workflows!(onboarding);
