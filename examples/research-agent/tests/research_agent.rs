//! The research agent on virtual time, through a real host: approved at
//! once, two rounds of feedback, a silent reviewer, a source that is down,
//! too few sources, feedback past the last revision, and replay — at every
//! activation boundary after the fact, and from scratch before every
//! activation while the run goes on.
//!
//! Needs the workflow built: `scripts/build-guests`.

use research_agent::{Config, Draft, Journal, activities, brief};
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use weft::RunStatus;
use weft::model::{RunId, Sha256Hex};
use weft::testing::{TestEnv, guest_wasm};
use weft::wasm::{EngineConfig, WasmEngine};

const HOUR: Duration = Duration::from_secs(3600);
const HOUR_MS: u64 = 3_600_000;

/// One engine for the whole file: the module is compiled once.
fn engine() -> Arc<WasmEngine> {
    static ENGINE: OnceLock<Arc<WasmEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| Arc::new(WasmEngine::new(EngineConfig::default()).unwrap()))
        .clone()
}

struct Kit {
    env: TestEnv,
    module: Sha256Hex,
    journal: Journal,
}

impl Kit {
    async fn new(config: Config, replay_every_activation: bool) -> Kit {
        let journal = Journal::default();
        let mut builder =
            TestEnv::builder(activities(config.journal(journal.clone()))).engine(engine());
        if replay_every_activation {
            builder = builder.replay_every_activation();
        }
        let env = builder.build().await.unwrap();
        journal.set_clock(Arc::new(env.clock().clone()));
        let wasm = guest_wasm("research-agent-workflow").unwrap();
        let module = env.deploy("research-agent", &wasm).await.unwrap();
        Kit {
            env,
            module,
            journal,
        }
    }

    async fn start(&self, id: &str, input: Value) -> RunId {
        self.env
            .start(&self.module, "research_agent", id, input)
            .await
            .unwrap()
    }

    async fn status_line(&self, run: &RunId) -> String {
        let record = self.env.host().describe(run).await.unwrap();
        record.status_line.unwrap_or_default()
    }

    async fn draft(&self, run: &RunId) -> Draft {
        self.env.query(run, "draft", ()).await.unwrap()
    }

    async fn review(&self, run: &RunId, approved: bool, feedback: &str) {
        self.env
            .signal(
                run,
                "review",
                json!({ "approved": approved, "feedback": feedback }),
            )
            .await
            .unwrap();
    }

    fn attempts(&self, activity: &str) -> usize {
        self.journal.attempts(activity)
    }

    /// Attempts of `fetch_and_summarise` for one source.
    fn fetches_of(&self, source: &str) -> usize {
        self.journal
            .entries()
            .iter()
            .filter(|e| {
                e.activity == "fetch_and_summarise" && e.text.starts_with(&format!("{source} "))
            })
            .count()
    }

    async fn done(self, run: &RunId) {
        self.env.assert_replays(run).await.unwrap();
        self.env.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_first_time_publishes_the_first_draft() {
    let kit = Kit::new(Config::default(), false).await;
    let run = kit.start("brief-approved", brief()).await;

    assert_eq!(
        kit.status_line(&run).await,
        "awaiting review of revision 1 (up to 48 h)"
    );
    let draft = kit.draft(&run).await;
    assert_eq!(draft.revision, 1);
    assert_eq!(draft.cited.len(), 5);
    assert!(draft.gaps.is_empty());
    assert!(!draft.body.contains("## Gaps"));

    kit.env.sleep(2 * HOUR).await.unwrap();
    kit.review(&run, true, "").await;
    let report: Value = kit.env.output(&run).await.unwrap();
    assert_eq!(report["outcome"], "published");
    assert_eq!(
        report["url"],
        "https://research.example/briefs/heat-pumps-in-cold-climates-r1"
    );
    assert_eq!(report["draft"]["revision"], 1);
    assert_eq!(report["reviews"].as_array().unwrap().len(), 1);
    assert_eq!(report["ticket"], Value::Null);
    assert_eq!(kit.status_line(&run).await, "published");
    assert_eq!(kit.attempts("fetch_and_summarise"), 5);
    assert_eq!(kit.attempts("draft"), 1);
    assert_eq!(kit.attempts("revise"), 0);
    assert_eq!(kit.attempts("publish"), 1);
    assert_eq!(kit.attempts("escalate"), 0);
    kit.done(&run).await;
}

/// Each wait for a review has a deadline of its own: 47 hours between
/// reviews, 141 in all, and nothing escalates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rounds_of_feedback_then_approved() {
    // The model is rate-limited on its first call: the draft is retried.
    let kit = Kit::new(Config::default().rate_limited(1), false).await;
    let run = kit.start("brief-feedback", brief()).await;
    kit.env.sleep(Duration::from_secs(60)).await.unwrap();
    assert_eq!(kit.attempts("draft"), 2);
    assert_eq!(kit.draft(&run).await.revision, 1);

    kit.env.sleep(47 * HOUR).await.unwrap();
    kit.review(&run, false, "Give the field study's sample size.")
        .await;
    assert_eq!(
        kit.status_line(&run).await,
        "awaiting review of revision 2 (up to 48 h)"
    );
    let second = kit.draft(&run).await;
    assert_eq!(second.revision, 2);
    assert!(second.body.contains("Give the field study's sample size."));

    kit.env.sleep(47 * HOUR).await.unwrap();
    kit.review(&run, false, "Lead with the efficiency figure.")
        .await;
    assert_eq!(kit.draft(&run).await.revision, 3);

    kit.env.sleep(47 * HOUR).await.unwrap();
    kit.review(&run, true, "Good to go.").await;
    let report: Value = kit.env.output(&run).await.unwrap();
    assert_eq!(report["outcome"], "published");
    assert_eq!(report["draft"]["revision"], 3);
    let reviews: Vec<(u64, bool)> = report["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["revision"].as_u64().unwrap(),
                r["approved"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(reviews, [(1, false), (2, false), (3, true)]);
    assert!(
        report["url"]
            .as_str()
            .unwrap()
            .ends_with("heat-pumps-in-cold-climates-r3")
    );
    assert_eq!(kit.attempts("revise"), 2);
    assert_eq!(kit.attempts("publish"), 1);
    assert_eq!(kit.attempts("escalate"), 0);
    kit.done(&run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_reviewer_escalates_after_48_hours() {
    let kit = Kit::new(Config::default(), false).await;
    let run = kit.start("brief-silent", brief()).await;
    let waiting_since = kit.env.now_ms();
    assert_eq!(
        kit.status_line(&run).await,
        "awaiting review of revision 1 (up to 48 h)"
    );

    // A minute before the deadline it still waits.
    kit.env
        .sleep(48 * HOUR - Duration::from_secs(60))
        .await
        .unwrap();
    let record = kit.env.host().describe(&run).await.unwrap();
    assert_eq!(record.status, RunStatus::Running);
    assert_eq!(kit.attempts("escalate"), 0);

    let report: Value = kit.env.output(&run).await.unwrap();
    assert_eq!(kit.env.now_ms() - waiting_since, 48 * HOUR_MS);
    assert_eq!(report["outcome"], "escalated");
    assert_eq!(
        report["escalation_reason"],
        "no review of revision 1 within 48 hours"
    );
    assert_eq!(report["ticket"], "EDITORIAL-heat-pumps-in-cold-climates-r1");
    assert_eq!(report["url"], Value::Null);
    assert_eq!(report["reviews"], json!([]));
    // The escalation carries the draft for an editor; nothing was published.
    assert_eq!(report["draft"]["revision"], 1);
    assert_eq!(kit.attempts("publish"), 0);
    assert_eq!(kit.attempts("escalate"), 1);
    assert_eq!(
        kit.status_line(&run).await,
        "escalated: no review of revision 1 within 48 hours"
    );
    kit.done(&run).await;
}

/// One source is down for good, one times out twice: the flaky one is
/// retried into the draft, the dead one is given up after four attempts and
/// the draft goes ahead with the other four, naming the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_down_drafts_from_the_other_four_and_notes_the_gap() {
    let config = Config::default()
        .flaky("trade-journal", 2)
        .down("vendor-blog");
    let kit = Kit::new(config, false).await;
    let started = kit.env.now_ms();
    let run = kit.start("brief-gap", brief()).await;
    assert_eq!(kit.status_line(&run).await, "researching 5 sources");

    kit.env.sleep(Duration::from_secs(10 * 60)).await.unwrap();
    assert_eq!(kit.fetches_of("trade-journal"), 3);
    assert_eq!(kit.fetches_of("vendor-blog"), 4);
    assert_eq!(kit.fetches_of("field-study"), 1);
    // 30 s, 60 s and 120 s between the dead source's attempts; the draft
    // waits for the last of them and no longer.
    let draft_at = kit
        .journal
        .entries()
        .iter()
        .find(|e| e.activity == "draft")
        .map(|e| e.at_ms)
        .unwrap();
    assert_eq!(draft_at - started, 210_000);

    let draft = kit.draft(&run).await;
    assert_eq!(
        draft.cited,
        ["energy-agency", "field-study", "trade-journal", "preprint"]
    );
    assert_eq!(draft.gaps, ["vendor-blog"]);
    let gaps = draft.body.split("## Gaps\n").nth(1).unwrap();
    assert!(
        gaps.starts_with(
            "- vendor-blog (https://blog.heatco.example/winter-performance) could not be read (SourceUnavailable)"
        ),
        "{gaps}"
    );
    assert!(!draft.body.contains("full capacity down to -25 C"));

    kit.review(&run, true, "").await;
    let report: Value = kit.env.output(&run).await.unwrap();
    assert_eq!(report["outcome"], "published");
    assert_eq!(report["sources_used"].as_array().unwrap().len(), 4);
    assert_eq!(report["gaps"][0]["source_id"], "vendor-blog");
    assert_eq!(report["gaps"][0]["error_type"], "SourceUnavailable");
    assert_eq!(report["gaps"].as_array().unwrap().len(), 1);
    kit.done(&run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_than_three_sources_fail_the_run_without_a_draft() {
    let config = Config::default()
        .down("vendor-blog")
        .down("preprint")
        .down("energy-agency");
    let kit = Kit::new(config, false).await;
    let run = kit.start("brief-dark", brief()).await;
    let record = kit.env.result(&run).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    let failure = record.failure.unwrap();
    assert_eq!(failure.error_type, "NotEnoughSources");
    assert!(
        failure
            .message
            .contains("only 2 of 5 sources answered (at least 3 are needed)"),
        "{}",
        failure.message
    );
    assert_eq!(kit.attempts("draft"), 0);
    assert_eq!(kit.fetches_of("preprint"), 4);
    kit.done(&run).await;
}

/// Three revisions is the bound: feedback on the third escalates instead of
/// a fourth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_on_the_last_revision_escalates() {
    let kit = Kit::new(Config::default(), false).await;
    let run = kit.start("brief-stuck", brief()).await;
    for round in 1..=4 {
        kit.env.sleep(HOUR).await.unwrap();
        kit.review(&run, false, &format!("Not yet ({round})."))
            .await;
    }
    let report: Value = kit.env.output(&run).await.unwrap();
    assert_eq!(report["outcome"], "escalated");
    assert_eq!(
        report["escalation_reason"],
        "revision 4 was still not approved after 3 rounds of feedback"
    );
    assert_eq!(report["draft"]["revision"], 4);
    assert_eq!(report["reviews"].as_array().unwrap().len(), 4);
    assert_eq!(kit.attempts("revise"), 3);
    assert_eq!(kit.attempts("escalate"), 1);
    assert_eq!(kit.attempts("publish"), 0);
    kit.done(&run).await;
}

/// Every activation starts from a fresh instance that replays the history
/// (as after a crash at each boundary), with retries, a gap, feedback and
/// queries on the way: the run ends exactly as a warm one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_before_every_activation_changes_nothing() {
    let config = || {
        Config::default()
            .flaky("trade-journal", 2)
            .down("vendor-blog")
            .rate_limited(1)
    };
    let mut reports = Vec::new();
    for replay_every_activation in [false, true] {
        let kit = Kit::new(config(), replay_every_activation).await;
        let run = kit.start("brief-replayed", brief()).await;
        kit.env.sleep(5 * HOUR).await.unwrap();
        let first = kit.draft(&run).await;
        kit.review(&run, false, "Cite the sample size.").await;
        kit.env.sleep(20 * HOUR).await.unwrap();
        let second = kit.draft(&run).await;
        assert_eq!((first.revision, second.revision), (1, 2));
        kit.review(&run, true, "").await;
        let report: Value = kit.env.output(&run).await.unwrap();
        // Activities ran once per attempt, however often the workflow replayed.
        assert_eq!(kit.attempts("fetch_and_summarise"), 3 + 4 + 3);
        assert_eq!(kit.attempts("draft"), 2);
        assert_eq!(kit.attempts("revise"), 1);
        assert_eq!(kit.attempts("publish"), 1);
        let history = kit.env.history(&run).await.unwrap();
        history.verify().unwrap();
        // Which results one activation takes in depends on when they
        // arrive (a warm run commits a result with the activation it wakes
        // at once; a replayed one is activated by the loop, with whatever
        // results came meanwhile), so the activations are not compared;
        // every other event is.
        let events = history
            .events()
            .iter()
            .filter(|e| e.event.kind() != "activation_started")
            .count();
        reports.push((report, events));
        kit.done(&run).await;
    }
    assert_eq!(reports[0], reports[1]);
    assert_eq!(reports[1].0["draft"]["revision"], 2);
    assert_eq!(reports[1].0["gaps"][0]["source_id"], "vendor-blog");
}
