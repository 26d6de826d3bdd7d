//! The activities of the `invoice_factoring` workflow, against in-memory
//! stand-ins for the outside world: a company registry (KYB), a credit
//! bureau, a bank and a collections agency.
//!
//! - [`Config`] injects the failures a real deployment sees — a bureau that
//!   times out, a bank whose answers get lost, clients the registry does not
//!   know — deterministically: the same configuration fails the same calls.
//! - [`Services`] is the world those activities act on; a test reads what
//!   they did from it (the [`Journal`], the bank's [`BankTransfer`]s, the
//!   collections [`Case`]s).
//! - [`activities`] registers `kyb_check`, `pull_credit`, `pay_advance`,
//!   `settle` and `collections` with the JSON contracts the workflow's crate
//!   documents.
//!
//! ```
//! use invoice_factoring::{Config, Services, activities};
//! let services = Services::new(Config { bureau_timeouts: 3, ..Config::default() });
//! let activities = activities(&services);
//! assert_eq!(activities.names().len(), 5);
//! ```
//!
//! Nothing here sleeps or draws random numbers: a bureau "timeout" is the
//! bureau's gateway answering that the bureau did not answer in time, which
//! is what the activity sees in production too.

mod journal;

pub use journal::{Attempt, Entry, Journal, format_time};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use weft::{Activities, ActivityContext, ActivityError};

/// Which failures the stand-ins inject.
#[derive(Clone, Debug)]
pub struct Config {
    /// Clients the company registry has no record of: KYB rejects them
    /// (`KybRejected`, not retryable).
    pub unknown_clients: Vec<String>,
    /// How many of its first requests per debtor the credit bureau lets time
    /// out (`BureauTimeout`, retryable) before it answers.
    pub bureau_timeouts: u32,
    /// Debtors the bureau has no file on (`DebtorUnknown`, not retryable).
    pub unknown_debtors: Vec<String>,
    /// The score the bureau reports.
    pub credit_score: u32,
    /// How many of its first transfers the bank carries out but whose
    /// confirmation is lost on the way back (`BankConnectionReset`,
    /// retryable): the retry must not pay twice.
    pub bank_lost_confirmations: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            unknown_clients: Vec::new(),
            bureau_timeouts: 0,
            unknown_debtors: Vec::new(),
            credit_score: 712,
            bank_lost_confirmations: 0,
        }
    }
}

/// A transfer the bank carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BankTransfer {
    pub transfer_id: String,
    /// The key the caller sent: a second request with it is answered with
    /// this transfer instead of paying again.
    pub idempotency_key: String,
    pub beneficiary: String,
    pub amount_cents: u64,
    pub memo: String,
}

/// A debt handed to the collections agency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    pub case_id: String,
    pub invoice_id: String,
    pub debtor: String,
    pub outstanding_cents: u64,
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
    /// Requests per debtor, to know which ones time out.
    bureau_requests: BTreeMap<String, u32>,
    transfers: Vec<BankTransfer>,
    lost_confirmations: u32,
    cases: Vec<Case>,
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

    /// How many requests the bureau received for `debtor`.
    pub fn bureau_requests(&self, debtor: &str) -> u32 {
        self.state()
            .bureau_requests
            .get(debtor)
            .copied()
            .unwrap_or(0)
    }

    /// Every transfer the bank carried out, in order.
    pub fn transfers(&self) -> Vec<BankTransfer> {
        self.state().transfers.clone()
    }

    /// Every case the collections agency opened, in order.
    pub fn cases(&self) -> Vec<Case> {
        self.state().cases.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn kyb_check(
        &self,
        ctx: &ActivityContext,
        req: KybRequest,
    ) -> Result<KybResult, ActivityError> {
        if self.config.unknown_clients.contains(&req.client) {
            self.journal.write(
                "registry",
                ctx,
                format!(
                    "no company named {} is registered: KYB rejected",
                    req.client
                ),
            );
            return Err(ActivityError::non_retryable(
                "KybRejected",
                format!(
                    "the company registry has no record of {}; ask the client for its registered name and number",
                    req.client
                ),
            ));
        }
        let company_number = format!("{:08}", fnv1a(&req.client) % 100_000_000);
        self.journal.write(
            "registry",
            ctx,
            format!("{} is registered as company {company_number}", req.client),
        );
        Ok(KybResult { company_number })
    }

    fn pull_credit(
        &self,
        ctx: &ActivityContext,
        req: CreditRequest,
    ) -> Result<CreditReport, ActivityError> {
        let request = {
            let mut state = self.state();
            let n = state.bureau_requests.entry(req.debtor.clone()).or_default();
            *n += 1;
            *n
        };
        if self.config.unknown_debtors.contains(&req.debtor) {
            self.journal.write(
                "bureau",
                ctx,
                format!("request {request}: no file on {}", req.debtor),
            );
            return Err(ActivityError::non_retryable(
                "DebtorUnknown",
                format!(
                    "the credit bureau has no file on {}; check the debtor's registered name",
                    req.debtor
                ),
            ));
        }
        if request <= self.config.bureau_timeouts {
            self.journal.write(
                "bureau",
                ctx,
                format!(
                    "request {request} for {} (attempt {}): the bureau's gateway timed out",
                    req.debtor,
                    ctx.attempt()
                ),
            );
            return Err(ActivityError::retryable(
                "BureauTimeout",
                format!(
                    "the credit bureau did not answer request {request} for {} in time",
                    req.debtor
                ),
            ));
        }
        let score = self.config.credit_score;
        self.journal.write(
            "bureau",
            ctx,
            format!(
                "request {request} for {} (attempt {}): score {score}, exposure {}",
                req.debtor,
                ctx.attempt(),
                money(req.exposure_cents)
            ),
        );
        Ok(CreditReport { score })
    }

    /// Pays `amount_cents` to `beneficiary` once per idempotency key.
    fn transfer(
        &self,
        ctx: &ActivityContext,
        beneficiary: &str,
        amount_cents: u64,
        memo: String,
    ) -> Result<Transfer, ActivityError> {
        let key = ctx.idempotency_key();
        let mut state = self.state();
        if let Some(done) = state.transfers.iter().find(|t| t.idempotency_key == key) {
            let transfer_id = done.transfer_id.clone();
            drop(state);
            self.journal.write(
                "bank",
                ctx,
                format!(
                    "{transfer_id} was already made for key {key}: confirmed again, nothing paid"
                ),
            );
            return Ok(Transfer { transfer_id });
        }
        let transfer_id = format!("TR-{:04}", state.transfers.len() + 1);
        state.transfers.push(BankTransfer {
            transfer_id: transfer_id.clone(),
            idempotency_key: key.clone(),
            beneficiary: beneficiary.to_owned(),
            amount_cents,
            memo: memo.clone(),
        });
        let lose = state.lost_confirmations < self.config.bank_lost_confirmations;
        if lose {
            state.lost_confirmations += 1;
        }
        drop(state);
        self.journal.write(
            "bank",
            ctx,
            format!(
                "{transfer_id}: {} to {beneficiary} ({memo}), key {key}{}",
                money(amount_cents),
                if lose {
                    "; the confirmation is lost on the way back"
                } else {
                    ""
                }
            ),
        );
        if lose {
            return Err(ActivityError::retryable(
                "BankConnectionReset",
                format!(
                    "the connection to the bank dropped before it confirmed the transfer with key {key}"
                ),
            ));
        }
        Ok(Transfer { transfer_id })
    }

    fn collections(
        &self,
        ctx: &ActivityContext,
        req: CollectionsRequest,
    ) -> Result<CaseOpened, ActivityError> {
        let mut state = self.state();
        // The agency keys cases by invoice: a retried hand-over finds its case.
        if let Some(case) = state.cases.iter().find(|c| c.invoice_id == req.invoice_id) {
            return Ok(CaseOpened {
                case_id: case.case_id.clone(),
            });
        }
        let case_id = format!("COL-{:04}", state.cases.len() + 1);
        state.cases.push(Case {
            case_id: case_id.clone(),
            invoice_id: req.invoice_id.clone(),
            debtor: req.debtor.clone(),
            outstanding_cents: req.outstanding_cents,
        });
        drop(state);
        self.journal.write(
            "collections",
            ctx,
            format!(
                "case {case_id}: {} outstanding from {} on {} ({} paid)",
                money(req.outstanding_cents),
                req.debtor,
                req.invoice_id,
                money(req.paid_cents)
            ),
        );
        Ok(CaseOpened { case_id })
    }
}

/// Registers the workflow's five activities against `services`.
pub fn activities(services: &Services) -> Activities {
    let mut activities = Activities::new();
    let s = services.clone();
    activities.register("kyb_check", move |ctx: ActivityContext, req: KybRequest| {
        let s = s.clone();
        async move { s.kyb_check(&ctx, req) }
    });
    let s = services.clone();
    activities.register(
        "pull_credit",
        move |ctx: ActivityContext, req: CreditRequest| {
            let s = s.clone();
            async move { s.pull_credit(&ctx, req) }
        },
    );
    let s = services.clone();
    activities.register(
        "pay_advance",
        move |ctx: ActivityContext, req: AdvanceRequest| {
            let s = s.clone();
            async move {
                let memo = format!("advance on {}", req.invoice_id);
                s.transfer(&ctx, &req.client, req.amount_cents, memo)
            }
        },
    );
    let s = services.clone();
    activities.register("settle", move |ctx: ActivityContext, req: SettleRequest| {
        let s = s.clone();
        async move {
            let expected = req.advance_cents + req.fee_cents + req.release_cents;
            if req.collected_cents != expected {
                return Err(ActivityError::non_retryable(
                    "SettlementMismatch",
                    format!(
                        "the settlement of {} does not add up: collected {} but advance + fee + release is {}",
                        req.invoice_id,
                        money(req.collected_cents),
                        money(expected)
                    ),
                ));
            }
            let memo = format!(
                "reserve release on {}: {} collected, less advance {} and fee {}",
                req.invoice_id,
                money(req.collected_cents),
                money(req.advance_cents),
                money(req.fee_cents)
            );
            s.transfer(&ctx, &req.client, req.release_cents, memo)
        }
    });
    let s = services.clone();
    activities.register(
        "collections",
        move |ctx: ActivityContext, req: CollectionsRequest| {
            let s = s.clone();
            async move { s.collections(&ctx, req) }
        },
    );
    activities
}

#[derive(Deserialize)]
struct KybRequest {
    client: String,
}

#[derive(Serialize)]
struct KybResult {
    company_number: String,
}

#[derive(Deserialize)]
struct CreditRequest {
    debtor: String,
    exposure_cents: u64,
}

#[derive(Serialize)]
struct CreditReport {
    score: u32,
}

#[derive(Deserialize)]
struct AdvanceRequest {
    invoice_id: String,
    client: String,
    amount_cents: u64,
}

#[derive(Deserialize)]
struct SettleRequest {
    invoice_id: String,
    client: String,
    collected_cents: u64,
    advance_cents: u64,
    fee_cents: u64,
    release_cents: u64,
}

#[derive(Serialize)]
struct Transfer {
    transfer_id: String,
}

#[derive(Deserialize)]
struct CollectionsRequest {
    invoice_id: String,
    debtor: String,
    outstanding_cents: u64,
    paid_cents: u64,
}

#[derive(Serialize)]
struct CaseOpened {
    case_id: String,
}

/// `4800000` cents as `48,000.00`.
pub fn money(cents: u64) -> String {
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

/// A stable stand-in for a registry number (FNV-1a): the same name always
/// gets the same number, with no randomness.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::money;

    #[test]
    fn formats_money() {
        assert_eq!(money(4_800_000), "48,000.00");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(12_345_678_901), "123,456,789.01");
    }
}
