//! Runs one invoice through the `invoice_factoring` workflow on an embedded
//! Weft host (a SQLite file in a fresh temporary directory, or `--database`)
//! on virtual time: the two months between the advance and the debtor's last
//! payment pass in about a second. It prints a timeline — the virtual date,
//! then who did what: the workflow (its status line, from the run's
//! history), the stand-in services (from their journal) and the people this
//! program plays (the underwriter, the debtor).
//!
//! ```text
//! scripts/build-guests
//! cargo run -p invoice-factoring                               # paid in full over 40 days
//! cargo run -p invoice-factoring -- --payments 10:16000        # pays a third: collections
//! cargo run -p invoice-factoring -- --decision reject
//! ```

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use invoice_factoring::{Config, Services, activities, format_time, money};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use weft::model::{Event, RunId};
use weft::testing::TestEnv;
use weft::{ListFilter, RunStatus, StartOptions};

/// Monday 2026-01-05 09:00 UTC, where the demo's virtual time starts.
const START_MS: u64 = 1_767_603_600_000;
const HOUR_MS: u64 = 3600 * 1000;
const DAY_MS: u64 = 24 * HOUR_MS;

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Decision {
    Approve,
    Reject,
    /// Nobody decides: the 7-day decision window closes.
    None,
}

/// A payment of the debtor: `DAY:AMOUNT`, days after the advance, whole
/// currency units.
#[derive(Clone, Copy)]
struct ScheduledPayment {
    day: u64,
    amount_cents: u64,
}

impl FromStr for ScheduledPayment {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |part: Option<&str>| part.and_then(|p| p.trim().parse::<u64>().ok());
        let mut parts = s.split(':');
        match (parse(parts.next()), parse(parts.next()), parts.next()) {
            (Some(day), Some(amount), None) => Ok(Self {
                day,
                amount_cents: amount * 100,
            }),
            _ => Err(format!(
                "{s:?} is not a payment; write DAY:AMOUNT, such as 12:16000 (16,000.00 twelve days after the advance)"
            )),
        }
    }
}

#[derive(Parser)]
#[command(about = "Factor one invoice with the invoice_factoring workflow, on virtual time")]
struct Args {
    /// The invoice amount, in whole currency units.
    #[arg(long, default_value = "48000")]
    amount: u64,
    /// What the underwriter decides, the day after the invoice came in.
    #[arg(long, value_enum, default_value = "approve")]
    decision: Decision,
    /// The debtor's payments, DAY:AMOUNT after the advance, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10:16000,24:16000,38:16000"
    )]
    payments: Vec<ScheduledPayment>,
    /// How many requests the credit bureau lets time out before it answers.
    #[arg(long, default_value = "3")]
    bureau_timeouts: u32,
    /// How many transfer confirmations the bank loses.
    #[arg(long, default_value = "1")]
    lost_confirmations: u32,
    /// A SQLite file path or a postgres:// URL; by default a SQLite file in
    /// a fresh temporary directory.
    #[arg(long, env = "WEFT_DATABASE")]
    database: Option<String>,
    /// The workflow component; by default the one `scripts/build-guests` built.
    #[arg(long)]
    module: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let wasm = match &args.module {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("cannot read the workflow module {}", path.display()))?,
        None => weft::testing::guest_wasm("invoice-factoring-workflow")?,
    };
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let database = match &args.database {
        Some(url) => url.clone(),
        None => scratch.path().join("weft.db").display().to_string(),
    };
    let store = weft::store::open(&database)
        .await
        .with_context(|| format!("cannot open the database {database}"))?;

    let services = Services::new(Config {
        bureau_timeouts: args.bureau_timeouts,
        bank_lost_confirmations: args.lost_confirmations,
        ..Config::default()
    });
    let env = TestEnv::builder(activities(&services))
        .store(store)
        .start_at_ms(START_MS)
        .build()
        .await?;
    services.journal().use_clock(env.clock().clone());
    let module = env.deploy("invoice-factoring", &wasm).await?;
    println!(
        "database {database}, module sha256 {}",
        &module.as_str()[..12]
    );

    let invoice = json!({
        "invoice_id": "INV-1042",
        "client": "Acme Tools Ltd",
        "debtor": "Globex Retail",
        "amount_cents": args.amount * 100,
        "advance_rate_bps": 8000,
        "fee_bps": 300,
    });
    let mut timeline = Timeline::new(&services);
    timeline.say(
        env.now_ms(),
        "client",
        &format!(
            "Acme Tools Ltd offers invoice INV-1042: Globex Retail owes {}",
            money(args.amount * 100)
        ),
    );
    let run = env
        .start_with(
            &module,
            "invoice_factoring",
            "factoring-INV-1042",
            &invoice,
            StartOptions::default(),
        )
        .await?;
    timeline.catch_up(&env, &run).await?;

    // The underwriter looks at it the next afternoon.
    let decided_ms = START_MS + DAY_MS + 5 * HOUR_MS;
    env.sleep(Duration::from_millis(decided_ms - env.now_ms()))
        .await?;
    timeline.catch_up(&env, &run).await?;
    let decision = match args.decision {
        Decision::Approve => Some(json!({ "approved": true, "by": "Lin" })),
        Decision::Reject => {
            Some(json!({ "approved": false, "by": "Lin", "note": "debtor concentration too high" }))
        }
        Decision::None => None,
    };
    let open = env.host().describe(&run).await?.status == RunStatus::Running;
    if let Some(decision) = decision.filter(|_| open) {
        let verb = if decision["approved"] == true {
            "approves"
        } else {
            "rejects"
        };
        timeline.say(env.now_ms(), "underwriter", &format!("Lin {verb}"));
        env.signal(&run, "decision", decision).await?;
        timeline.catch_up(&env, &run).await?;

        for (i, payment) in args.payments.iter().enumerate() {
            let at = decided_ms + payment.day * DAY_MS;
            if at > env.now_ms() {
                env.sleep(Duration::from_millis(at - env.now_ms())).await?;
            }
            timeline.catch_up(&env, &run).await?;
            if env.host().describe(&run).await?.status != RunStatus::Running {
                break;
            }
            let reference = format!("GLX-{}", 88_121 + i);
            timeline.say(
                env.now_ms(),
                "debtor",
                &format!(
                    "Globex Retail pays {} (reference {reference})",
                    money(payment.amount_cents)
                ),
            );
            env.signal(
                &run,
                "payment",
                json!({ "amount_cents": payment.amount_cents, "reference": reference }),
            )
            .await?;
            timeline.catch_up(&env, &run).await?;
            if i == 0 {
                let status: Value = env.query(&run, "status", ()).await?;
                timeline.say(env.now_ms(), "query", &format!("status → {status}"));
            }
        }
    }

    // Whatever is left is waiting on time: skip to the end.
    let record = env.result(&run).await?;
    timeline.catch_up(&env, &run).await?;
    println!();
    match weft::outcome(&record) {
        Ok(output) => println!("result: {output}"),
        Err(failure) => println!("the run ended {:?}: {failure}", record.status),
    }
    println!(
        "search attributes: {}; status line: {:?}",
        record.search_attributes,
        record.status_line.as_deref().unwrap_or("")
    );
    let by_debtor = env
        .host()
        .list(&ListFilter {
            search_attributes: vec![("debtor".into(), json!("Globex Retail"))],
            ..ListFilter::default()
        })
        .await?;
    println!("runs with debtor = \"Globex Retail\": {}", by_debtor.len());
    for transfer in services.transfers() {
        println!(
            "bank: {} {} to {} ({})",
            transfer.transfer_id,
            money(transfer.amount_cents),
            transfer.beneficiary,
            transfer.memo
        );
    }
    let history = env.history(&run).await?;
    env.assert_replays(&run).await?;
    println!(
        "history: {} events, hash chain {}, replays identically from every activation",
        history.len(),
        if history.verify().is_ok() {
            "verified"
        } else {
            "BROKEN"
        }
    );
    env.shutdown().await;
    Ok(())
}

/// Prints the timeline: the workflow's status lines and end from its
/// history, merged in time order with the services' journal and the demo's
/// own actions.
struct Timeline {
    services: Services,
    /// Journal entries already printed.
    entries_shown: usize,
    /// History events already looked at.
    events_seen: usize,
}

impl Timeline {
    fn new(services: &Services) -> Self {
        Self {
            services: services.clone(),
            entries_shown: 0,
            events_seen: 0,
        }
    }

    fn say(&self, at_ms: u64, who: &str, what: &str) {
        println!("{}  {who:<12} {what}", format_time(at_ms));
    }

    /// Prints what happened since the last call, in order. Services act
    /// between the activation that scheduled them and the one that receives
    /// their outcome, so a journal entry goes before the first history event
    /// that is later, or that completes its activity.
    async fn catch_up(&mut self, env: &TestEnv, run: &RunId) -> anyhow::Result<()> {
        let entries = self.services.journal().entries();
        let history = env.history(run).await?;
        for recorded in &history.events()[self.events_seen..] {
            let completes = match &recorded.event {
                Event::ActivityCompleted { seq, .. } | Event::ActivityFailed { seq, .. } => {
                    Some(*seq)
                }
                _ => None,
            };
            while let Some(entry) = entries.get(self.entries_shown) {
                if entry.at_ms < recorded.recorded_at_ms || Some(entry.by.seq) == completes {
                    self.say(entry.at_ms, entry.service, &entry.text);
                    self.entries_shown += 1;
                } else {
                    break;
                }
            }
            match &recorded.event {
                Event::StatusLineSet { text } => {
                    self.say(recorded.recorded_at_ms, "workflow", text)
                }
                Event::WorkflowCompleted { output } => self.say(
                    recorded.recorded_at_ms,
                    "workflow",
                    &format!("completed: {}", output["outcome"]),
                ),
                Event::WorkflowFailed { failure } => self.say(
                    recorded.recorded_at_ms,
                    "workflow",
                    &format!("failed: {failure}"),
                ),
                _ => {}
            }
        }
        self.events_seen = history.len();
        for entry in &entries[self.entries_shown..] {
            self.say(entry.at_ms, entry.service, &entry.text);
        }
        self.entries_shown = entries.len();
        Ok(())
    }
}
