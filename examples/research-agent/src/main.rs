//! Runs the `research_agent` workflow on an embedded Weft host (SQLite, in a
//! temporary directory unless `--database` says otherwise) on virtual time:
//! five sources fetched at once — one times out twice and is retried, one is
//! down for good and the brief notes the gap — a draft, a reviewer who asks
//! for a change five hours later and approves the revision the next day.
//!
//! ```text
//! scripts/build-guests
//! cargo run -p research-agent                      # feedback, then approval
//! cargo run -p research-agent -- --review approve  # approved at once
//! cargo run -p research-agent -- --review silent   # nobody reviews: escalated after 48 h
//! ```

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use research_agent::{Config, Journal, activities, brief};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use weft::model::{Event, RunId};
use weft::testing::{TestEnv, guest_wasm};

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Reviewer {
    /// Asks for a change after 5 h, approves the revision 20 h later.
    Feedback,
    /// Approves the first draft after 3 h.
    Approve,
    /// Never answers: the workflow escalates after 48 h.
    Silent,
}

#[derive(Parser)]
#[command(about = "Run the research-agent workflow on an embedded Weft host, on virtual time")]
struct Args {
    /// What the reviewer does.
    #[arg(long, value_enum, default_value = "feedback")]
    review: Reviewer,
    /// A SQLite file path or a postgres:// URL; by default a SQLite file in a
    /// temporary directory.
    #[arg(long, env = "WEFT_DATABASE")]
    database: Option<String>,
}

/// Prints what happens, stamped with virtual time since the start.
struct Timeline {
    start_ms: u64,
    journal: Journal,
}

impl Timeline {
    fn stamp(&self, at_ms: u64) -> String {
        let s = at_ms.saturating_sub(self.start_ms) / 1000;
        format!("+{:>2}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
    }

    /// Prints the activity attempts since the last call. Attempts that ran
    /// at the same virtual time ran concurrently; they are printed in the
    /// order of the workflow's stages, then alphabetically, so that the
    /// output is the same every time.
    fn activities(&self) {
        const STAGES: [&str; 5] = [
            "fetch_and_summarise",
            "draft",
            "revise",
            "publish",
            "escalate",
        ];
        let mut entries = self.journal.unread();
        entries.sort_by_key(|e| {
            let stage = STAGES.iter().position(|s| *s == e.activity);
            (e.at_ms, stage, e.text.clone())
        });
        for e in entries {
            println!("{}  {:<19} {}", self.stamp(e.at_ms), e.activity, e.text);
        }
    }

    fn say(&self, env: &TestEnv, what: &str) {
        println!("{}  {what}", self.stamp(env.now_ms()));
    }

    async fn status(&self, env: &TestEnv, run: &RunId) -> anyhow::Result<()> {
        let record = env.host().describe(run).await?;
        let line = record.status_line.unwrap_or_default();
        self.say(env, &format!("status line: {line}"));
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let database = match args.database {
        Some(d) => d,
        None => tmp
            .path()
            .join("research-agent.db")
            .to_string_lossy()
            .into_owned(),
    };
    let wasm = guest_wasm("research-agent-workflow")?;
    let store = weft::store::open(&database)
        .await
        .with_context(|| format!("cannot open the database {database}"))?;

    let journal = Journal::default();
    let config = Config::default()
        .flaky("trade-journal", 2)
        .down("vendor-blog")
        .journal(journal.clone());
    let env = TestEnv::builder(activities(config))
        .store(store)
        .build()
        .await?;
    journal.set_clock(Arc::new(env.clock().clone()));
    let t = Timeline {
        start_ms: env.now_ms(),
        journal,
    };
    let module = env.deploy("research-agent", &wasm).await?;

    println!("database: {database}; virtual time starts at +0h00m00s");
    let run = env
        .start(&module, "research_agent", "brief-heat-pumps", brief())
        .await?;
    t.say(
        &env,
        &format!("started run {run} (workflow id brief-heat-pumps)"),
    );
    t.activities();
    t.status(&env, &run).await?;

    // Retries come 30 s, 60 s and 120 s apart; the draft follows the last one.
    env.sleep(Duration::from_secs(10 * 60)).await?;
    t.activities();
    t.status(&env, &run).await?;
    let draft: Value = env.query(&run, "draft", ()).await?;
    t.say(&env, "query draft: the gaps section reads");
    if let Some(body) = draft["body"].as_str()
        && let Some(gaps) = body.split("## Gaps\n").nth(1)
    {
        for line in gaps.lines().take_while(|l| !l.is_empty()) {
            println!("             | {line}");
        }
    }

    match args.review {
        Reviewer::Feedback => {
            env.sleep(Duration::from_secs(5 * 3600)).await?;
            let feedback = "Give the field study's sample size in the summary.";
            t.say(
                &env,
                &format!("signal review: not approved, \"{feedback}\""),
            );
            env.signal(
                &run,
                "review",
                json!({ "approved": false, "feedback": feedback }),
            )
            .await?;
            t.activities();
            t.status(&env, &run).await?;
            env.sleep(Duration::from_secs(20 * 3600)).await?;
            t.say(&env, "signal review: approved");
            env.signal(&run, "review", json!({ "approved": true, "feedback": "" }))
                .await?;
        }
        Reviewer::Approve => {
            env.sleep(Duration::from_secs(3 * 3600)).await?;
            t.say(&env, "signal review: approved");
            env.signal(&run, "review", json!({ "approved": true, "feedback": "" }))
                .await?;
        }
        Reviewer::Silent => t.say(&env, "the reviewer does not answer"),
    }
    let record = env.result(&run).await?;
    t.activities();
    t.status(&env, &run).await?;

    let report = weft::outcome(&record).map_err(|f| anyhow::anyhow!("the run failed: {f}"))?;
    println!();
    println!("outcome: {}", report["outcome"]);
    if let Some(url) = report["url"].as_str() {
        println!("url: {url}");
    }
    if let Some(ticket) = report["ticket"].as_str() {
        println!("ticket: {ticket} ({})", report["escalation_reason"]);
    }
    println!(
        "revision {}, sources used: {}, gaps: {}",
        report["draft"]["revision"], report["sources_used"], report["draft"]["gaps"]
    );
    for review in report["reviews"].as_array().into_iter().flatten() {
        println!(
            "review of revision {}: approved {}{}",
            review["revision"],
            review["approved"],
            match review["feedback"].as_str() {
                Some(f) if !f.is_empty() => format!(", \"{f}\""),
                _ => String::new(),
            }
        );
    }

    let history = env.history(&run).await?;
    println!();
    println!("status lines, from the history:");
    for e in history.events() {
        if let Event::StatusLineSet { text } = &e.event {
            println!("  {}  {text}", t.stamp(e.recorded_at_ms));
        }
    }
    println!(
        "history: {} events, hash chain {}",
        history.len(),
        if history.verify().is_ok() {
            "verified"
        } else {
            "BROKEN"
        }
    );
    env.assert_replays(&run).await?;
    println!("replayed from every activation boundary: identical");
    env.shutdown().await;
    Ok(())
}
