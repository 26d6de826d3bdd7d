//! Runs one application through the `loan_application` workflow on an
//! embedded Weft host (a SQLite file in a fresh temporary directory, or
//! `--database`) on virtual time, so that days of reminders pass in well
//! under a second. It prints a timeline — the virtual date, then who did
//! what: the workflow (its status line, from the run's history), the
//! stand-in services (from their journal) and the people this program plays
//! (the applicant, the underwriter).
//!
//! ```text
//! scripts/build-guests
//! cargo run -p loan-application                         # documents after two reminders, approved by update
//! cargo run -p loan-application -- --via signal --decision reject
//! cargo run -p loan-application -- --amount 8000        # approved automatically
//! cargo run -p loan-application -- --no-documents       # seven reminders, withdrawn
//! cargo run -p loan-application -- --flagged            # the fraud check fails the run
//! ```

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use loan_application::{Config, Services, activities, format_time};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use weft::model::{Event, RunId};
use weft::testing::{TestEnv, TestError};
use weft::{HostError, RunStatus};

/// Monday 2026-01-05 09:00 UTC, where the demo's virtual time starts.
const START_MS: u64 = 1_767_603_600_000;
const HOUR_MS: u64 = 3600 * 1000;

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Decision {
    Approve,
    Reject,
    /// Nobody decides: the 5-day decision window closes.
    None,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Via {
    /// Update `decide`: validated, and answered.
    Update,
    /// Signal `decision`: fire-and-forget.
    Signal,
}

#[derive(Parser)]
#[command(
    about = "Take one loan application through the loan_application workflow, on virtual time"
)]
struct Args {
    /// The amount asked for, in whole currency units.
    #[arg(long, default_value = "25000")]
    amount: u64,
    /// Amounts below this are approved without an underwriter.
    #[arg(long, default_value = "10000")]
    auto_approve_below: u64,
    /// What the underwriter decides.
    #[arg(long, value_enum, default_value = "approve")]
    decision: Decision,
    /// How the underwriter's decision reaches the workflow.
    #[arg(long, value_enum, default_value = "update")]
    via: Via,
    /// The applicant never sends the missing documents.
    #[arg(long)]
    no_documents: bool,
    /// The fraud screening flags the applicant.
    #[arg(long)]
    flagged: bool,
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
        None => weft::testing::guest_wasm("loan-application-workflow")?,
    };
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let database = match &args.database {
        Some(url) => url.clone(),
        None => scratch.path().join("weft.db").display().to_string(),
    };
    let store = weft::store::open(&database)
        .await
        .with_context(|| format!("cannot open the database {database}"))?;

    let applicant = "Grace Hopper";
    let services = Services::new(Config {
        flagged_applicants: if args.flagged {
            vec![applicant.to_owned()]
        } else {
            Vec::new()
        },
        ..Config::default()
    });
    let env = TestEnv::builder(activities(&services))
        .store(store)
        .start_at_ms(START_MS)
        .build()
        .await?;
    services.journal().use_clock(env.clock().clone());
    let module = env.deploy("loan-application", &wasm).await?;
    println!(
        "database {database}, module sha256 {}",
        &module.as_str()[..12]
    );

    let application = json!({
        "application_id": "LA-2031",
        "applicant": applicant,
        "email": "grace@example.com",
        "amount": args.amount,
        "auto_approve_below": args.auto_approve_below,
        "required_documents": ["id", "payslip", "bank_statement"],
        "submitted_documents": ["id"],
    });
    let mut timeline = Timeline::new(&services);
    timeline.say(
        env.now_ms(),
        "applicant",
        &format!(
            "{applicant} applies for {} with her id; payslip and bank statement to follow",
            args.amount
        ),
    );
    let run = env
        .start(&module, "loan_application", "loan-LA-2031", &application)
        .await?;
    timeline.catch_up(&env, &run).await?;

    // An eager underwriter tries to decide before the file is complete.
    if args.via == Via::Update {
        timeline.say(
            env.now_ms(),
            "underwriter",
            "Lin tries to approve at once (update decide)",
        );
        match env
            .update(&run, "decide", json!({ "approved": true, "by": "Lin" }))
            .await
        {
            Err(TestError::Host(HostError::UpdateRejected { message, .. })) => {
                timeline.say(env.now_ms(), "update", &format!("refused: {message}"))
            }
            other => timeline.say(env.now_ms(), "update", &format!("{other:?}")),
        }
        timeline.catch_up(&env, &run).await?;
    }

    if !args.no_documents {
        // The payslip a day and a bit later, the bank statement that evening.
        sleep_until(&env, START_MS + 27 * HOUR_MS).await?;
        timeline.catch_up(&env, &run).await?;
        query_status(&env, &run, &timeline).await?;
        timeline.say(env.now_ms(), "applicant", "uploads her payslip");
        env.signal(&run, "documents", json!({ "documents": ["payslip"] }))
            .await?;
        timeline.catch_up(&env, &run).await?;
        sleep_until(&env, START_MS + 33 * HOUR_MS).await?;
        timeline.say(env.now_ms(), "applicant", "uploads her bank statement");
        env.signal(
            &run,
            "documents",
            json!({ "documents": ["bank_statement"] }),
        )
        .await?;
        timeline.catch_up(&env, &run).await?;
        query_status(&env, &run, &timeline).await?;
    }

    // The underwriter decides the next morning, if there is anything to decide.
    sleep_until(&env, START_MS + 48 * HOUR_MS + HOUR_MS).await?;
    timeline.catch_up(&env, &run).await?;
    let record = env.host().describe(&run).await?;
    let awaiting = record.status == RunStatus::Running
        && env.query::<Value>(&run, "status", ()).await?["stage"] == "awaiting_decision";
    if awaiting && args.decision != Decision::None {
        let approved = args.decision == Decision::Approve;
        let decision = json!({
            "approved": approved,
            "by": "Lin",
            "reason": if approved { "income covers the repayments three times" } else { "debt-to-income ratio above 45 %" },
        });
        let verb = if approved { "approves" } else { "rejects" };
        match args.via {
            Via::Update => {
                timeline.say(
                    env.now_ms(),
                    "underwriter",
                    &format!("Lin {verb} (update decide)"),
                );
                let answer = env.update(&run, "decide", decision).await?;
                timeline.say(env.now_ms(), "update", &format!("answered {answer}"));
            }
            Via::Signal => {
                timeline.say(
                    env.now_ms(),
                    "underwriter",
                    &format!("Lin {verb} (signal decision)"),
                );
                env.signal(&run, "decision", decision).await?;
            }
        }
        timeline.catch_up(&env, &run).await?;
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
        "reminders sent: {}, mails in all: {}",
        services.reminders().len(),
        services.mails().len()
    );
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

async fn sleep_until(env: &TestEnv, at_ms: u64) -> Result<(), TestError> {
    env.sleep(Duration::from_millis(at_ms.saturating_sub(env.now_ms())))
        .await
}

async fn query_status(env: &TestEnv, run: &RunId, timeline: &Timeline) -> anyhow::Result<()> {
    let status: Value = env.query(run, "status", ()).await?;
    timeline.say(env.now_ms(), "query", &format!("status → {status}"));
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
