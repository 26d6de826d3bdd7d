//! The activities of the `research_agent` workflow (see the
//! `research-agent-workflow` crate), as deterministic stand-ins for the real
//! thing: a small fixed [`web`] instead of HTTP, and text assembly instead of
//! a language model. Failures are injected by [`Config`] — a source that times
//! out for its first attempts, a source that is down for good, a model that
//! is rate-limited — and never drawn at random; nothing sleeps.
//!
//! [`activities`] registers them; a [`Journal`] records every call with the
//! virtual time it ran at, for the demo's timeline and the tests' counts.
//!
//! ```no_run
//! # async fn f() -> Result<(), weft::testing::TestError> {
//! use research_agent::{Config, activities, brief};
//! use weft::testing::{TestEnv, guest_wasm};
//!
//! let config = Config::default().down("vendor-blog");
//! let env = TestEnv::builder(activities(config)).build().await?;
//! let module = env.deploy("research-agent", &guest_wasm("research-agent-workflow")?).await?;
//! let run = env.start(&module, "research_agent", "brief-1", brief()).await?;
//! env.signal(&run, "review", serde_json::json!({"approved": true, "feedback": ""})).await?;
//! let report: serde_json::Value = env.output(&run).await?;
//! # let _ = report; Ok(()) }
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use weft::{Activities, ActivityContext, ActivityError, Clock};

/// The topic the demo and the tests research.
pub const TOPIC: &str = "Heat pumps in cold climates";

/// One page of the stand-in web: what `fetch_and_summarise` reads for a source id.
pub struct Page {
    pub id: &'static str,
    pub url: &'static str,
    pub title: &'static str,
    pub text: &'static str,
}

/// The stand-in web: five sources on [`TOPIC`]. The figures in them are
/// made up for the example.
pub fn web() -> &'static [Page] {
    &[
        Page {
            id: "energy-agency",
            url: "https://energy-agency.example/reports/heat-pumps-2025",
            title: "Heat pumps: outlook 2025",
            text: "Heat pump sales grew in every major market over the last five years. \
                   Installations in the coldest regions rose by 34% in 2024. \
                   Average seasonal efficiency was 2.9 in climates below -15 C. \
                   Policy support remains the main driver of adoption.",
        },
        Page {
            id: "field-study",
            url: "https://national-lab.example/field-study/cold-climate-heat-pumps",
            title: "Cold-climate heat pump field study",
            text: "Monitored homes kept their set point through the whole winter without backup heat. \
                   The study followed 112 homes over two heating seasons. \
                   Backup resistance heat ran for 3% of heating hours on average. \
                   Undersized units were the common cause of comfort complaints.",
        },
        Page {
            id: "trade-journal",
            url: "https://hvac-journal.example/2025/cold-climate-retrofits",
            title: "Retrofitting for the cold",
            text: "Installers report that sizing and duct work matter more than the unit's brand. \
                   Retrofit jobs took 2 days on average in the surveyed firms. \
                   Customer call-backs fell by 40% after a sizing checklist was introduced.",
        },
        Page {
            id: "preprint",
            url: "https://preprints.example/2501.01234",
            title: "Defrost losses in air-source heat pumps",
            text: "Defrost cycles cost less efficiency than commonly assumed. \
                   Measured defrost losses were 6% of seasonal output at -10 C. \
                   Smarter defrost control cut those losses by half in the lab.",
        },
        Page {
            id: "vendor-blog",
            url: "https://blog.heatco.example/winter-performance",
            title: "How our units handle winter",
            text: "Our latest units deliver full capacity down to -25 C. \
                   Owners in 9 countries have run them through winter.",
        },
    ]
}

/// A source as the workflow's input names it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Source {
    pub id: String,
    pub url: String,
}

/// The workflow's input for [`TOPIC`] over all of [`web`], with the
/// workflow's defaults (48 h per review wait, three revisions, three
/// sources at least).
pub fn brief() -> Value {
    let sources: Vec<Source> = web()
        .iter()
        .map(|p| Source {
            id: p.id.to_owned(),
            url: p.url.to_owned(),
        })
        .collect();
    json!({ "topic": TOPIC, "sources": sources })
}

/// Which failures the activities inject. The default injects none.
#[derive(Clone, Default)]
pub struct Config {
    /// Source id → how many attempts time out (`SourceTimeout`) before one answers.
    pub flaky_sources: BTreeMap<String, u32>,
    /// Sources that answer `503 Service Unavailable` to every attempt.
    pub down_sources: BTreeSet<String>,
    /// How many calls to the model (`draft`, `revise`), counted across the
    /// process, are refused with `RateLimited` before it answers again.
    pub rate_limited_model_calls: u32,
    /// Where every call is recorded.
    pub journal: Journal,
}

impl Config {
    /// Source `id` times out on its first `attempts` attempts.
    pub fn flaky(mut self, id: &str, attempts: u32) -> Self {
        self.flaky_sources.insert(id.to_owned(), attempts);
        self
    }

    /// Source `id` is down for good.
    pub fn down(mut self, id: &str) -> Self {
        self.down_sources.insert(id.to_owned());
        self
    }

    /// The first `calls` model calls are rate-limited.
    pub fn rate_limited(mut self, calls: u32) -> Self {
        self.rate_limited_model_calls = calls;
        self
    }

    /// Records calls in `journal` (share it to read what happened).
    pub fn journal(mut self, journal: Journal) -> Self {
        self.journal = journal;
        self
    }
}

/// One recorded activity attempt.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Virtual time of the attempt, ms since the Unix epoch (0 until
    /// [`Journal::set_clock`]).
    pub at_ms: u64,
    pub activity: &'static str,
    /// What it did, in a few words.
    pub text: String,
}

/// Every activity attempt, in the order they ran. Cheap to clone; clones
/// share the record.
#[derive(Clone, Default)]
pub struct Journal {
    state: Arc<Mutex<JournalState>>,
}

#[derive(Default)]
struct JournalState {
    entries: Vec<Entry>,
    clock: Option<Arc<dyn Clock>>,
    read: usize,
}

impl Journal {
    /// Stamps entries with this clock's time (the test environment's).
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        self.lock().clock = Some(clock);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JournalState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, activity: &'static str, text: String) {
        let mut state = self.lock();
        let at_ms = state.clock.as_ref().map_or(0, |c| c.now_ms());
        state.entries.push(Entry {
            at_ms,
            activity,
            text,
        });
    }

    /// Everything recorded so far.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().entries.clone()
    }

    /// How many attempts of `activity` ran.
    pub fn attempts(&self, activity: &str) -> usize {
        self.lock()
            .entries
            .iter()
            .filter(|e| e.activity == activity)
            .count()
    }

    /// What was recorded since the last call.
    pub fn unread(&self) -> Vec<Entry> {
        let mut state = self.lock();
        let new = state.entries[state.read..].to_vec();
        state.read = state.entries.len();
        new
    }
}

/// The input of `fetch_and_summarise` (its `topic` is not needed to read a page).
#[derive(Deserialize)]
struct FetchRequest {
    source: Source,
}

/// What `fetch_and_summarise` returns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub source_id: String,
    pub url: String,
    pub title: String,
    pub summary: String,
    pub key_points: Vec<String>,
}

/// A source the draft had to do without, as the workflow reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Gap {
    pub source_id: String,
    pub url: String,
    pub error_type: String,
    pub message: String,
}

/// A draft of the brief, as `draft` and `revise` write it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Draft {
    pub revision: u32,
    pub title: String,
    pub body: String,
    pub cited: Vec<String>,
    pub gaps: Vec<String>,
}

#[derive(Deserialize)]
struct DraftRequest {
    topic: String,
    summaries: Vec<Summary>,
    gaps: Vec<Gap>,
}

#[derive(Deserialize)]
struct ReviseRequest {
    draft: Draft,
    feedback: String,
    round: u32,
}

#[derive(Deserialize)]
struct PublishRequest {
    topic: String,
    draft: Draft,
}

#[derive(Deserialize)]
struct EscalateRequest {
    topic: String,
    draft: Draft,
    reason: String,
}

/// Registers `fetch_and_summarise`, `draft`, `revise`, `publish` and
/// `escalate`, failing as `config` says.
pub fn activities(config: Config) -> Activities {
    let config = Arc::new(config);
    let model_calls = Arc::new(AtomicU32::new(0));
    let mut activities = Activities::new();

    let c = Arc::clone(&config);
    activities.register(
        "fetch_and_summarise",
        move |ctx: ActivityContext, req: FetchRequest| {
            let c = Arc::clone(&c);
            async move { fetch_and_summarise(&c, &ctx, &req) }
        },
    );

    let (c, calls) = (Arc::clone(&config), Arc::clone(&model_calls));
    activities.register("draft", move |ctx: ActivityContext, req: DraftRequest| {
        let (c, calls) = (Arc::clone(&c), Arc::clone(&calls));
        async move {
            model_call(&c, &calls, "draft", ctx.attempt)?;
            let draft = write_draft(&req);
            c.journal.record(
                "draft",
                format!(
                    "revision 1 from {} sources ({} words), gaps noted: {}",
                    draft.cited.len(),
                    words(&draft.body),
                    list_or_none(&draft.gaps)
                ),
            );
            Ok::<_, ActivityError>(draft)
        }
    });

    let (c, calls) = (Arc::clone(&config), Arc::clone(&model_calls));
    activities.register("revise", move |ctx: ActivityContext, req: ReviseRequest| {
        let (c, calls) = (Arc::clone(&c), Arc::clone(&calls));
        async move {
            model_call(&c, &calls, "revise", ctx.attempt)?;
            let draft = revise(req);
            c.journal.record(
                "revise",
                format!("revision {} ({} words)", draft.revision, words(&draft.body)),
            );
            Ok::<_, ActivityError>(draft)
        }
    });

    let c = Arc::clone(&config);
    activities.register(
        "publish",
        move |ctx: ActivityContext, req: PublishRequest| {
            let c = Arc::clone(&c);
            async move {
                let url = format!(
                    "https://research.example/briefs/{}-r{}",
                    slug(&req.topic),
                    req.draft.revision
                );
                c.journal.record(
                    "publish",
                    format!(
                        "revision {} at {url} (idempotency key {})",
                        req.draft.revision,
                        ctx.idempotency_key()
                    ),
                );
                Ok::<_, ActivityError>(json!({ "url": url }))
            }
        },
    );

    let c = Arc::clone(&config);
    activities.register(
        "escalate",
        move |_: ActivityContext, req: EscalateRequest| {
            let c = Arc::clone(&c);
            async move {
                let ticket = format!("EDITORIAL-{}-r{}", slug(&req.topic), req.draft.revision);
                c.journal
                    .record("escalate", format!("{ticket} opened: {}", req.reason));
                Ok::<_, ActivityError>(json!({ "ticket": ticket }))
            }
        },
    );
    activities
}

fn fetch_and_summarise(
    config: &Config,
    ctx: &ActivityContext,
    req: &FetchRequest,
) -> Result<Summary, ActivityError> {
    let id = req.source.id.as_str();
    let journal = &config.journal;
    let attempt = ctx.attempt;
    if config.down_sources.contains(id) {
        journal.record(
            "fetch_and_summarise",
            format!("{id} attempt {attempt}: 503 Service Unavailable"),
        );
        return Err(ActivityError::retryable(
            "SourceUnavailable",
            format!("{} answered 503 Service Unavailable", req.source.url),
        ));
    }
    if config.flaky_sources.get(id).is_some_and(|n| attempt <= *n) {
        journal.record(
            "fetch_and_summarise",
            format!("{id} attempt {attempt}: timed out"),
        );
        return Err(ActivityError::retryable(
            "SourceTimeout",
            format!("{} did not answer within 10 s", req.source.url),
        ));
    }
    let Some(page) = web().iter().find(|p| p.id == id) else {
        journal.record(
            "fetch_and_summarise",
            format!("{id} attempt {attempt}: 404 Not Found"),
        );
        return Err(ActivityError::non_retryable(
            "SourceNotFound",
            format!("{} answered 404 Not Found", req.source.url),
        ));
    };
    let summary = summarise(page);
    journal.record(
        "fetch_and_summarise",
        format!(
            "{id} attempt {attempt}: summarised \"{}\" (key points: {})",
            page.title,
            summary.key_points.len()
        ),
    );
    Ok(summary)
}

/// The stand-in for a model's summary: the page's first sentence, and the
/// sentences that carry a figure as its key points.
fn summarise(page: &Page) -> Summary {
    let sentences: Vec<&str> = page
        .text
        .split(". ")
        .map(|s| s.trim().trim_end_matches('.'))
        .filter(|s| !s.is_empty())
        .collect();
    Summary {
        source_id: page.id.to_owned(),
        url: page.url.to_owned(),
        title: page.title.to_owned(),
        summary: sentences
            .first()
            .map(|s| format!("{s}."))
            .unwrap_or_default(),
        key_points: sentences
            .iter()
            .skip(1)
            .filter(|s| s.chars().any(|c| c.is_ascii_digit()))
            .map(|s| format!("{s}."))
            .collect(),
    }
}

/// Counts a model call; the first `rate_limited_model_calls` are refused.
fn model_call(
    config: &Config,
    calls: &AtomicU32,
    activity: &'static str,
    attempt: u32,
) -> Result<(), ActivityError> {
    let n = calls.fetch_add(1, Ordering::SeqCst);
    if n < config.rate_limited_model_calls {
        config.journal.record(
            activity,
            format!("attempt {attempt}: 429 Too Many Requests from the model"),
        );
        return Err(ActivityError::retryable(
            "RateLimited",
            "the model answered 429 Too Many Requests",
        ));
    }
    Ok(())
}

fn write_draft(req: &DraftRequest) -> Draft {
    let mut body = format!("# {}: research brief\n\n## Findings\n", req.topic);
    for s in &req.summaries {
        body.push_str(&format!("- {} [{}]\n", s.summary, s.source_id));
    }
    body.push_str("\n## Key figures\n");
    for s in &req.summaries {
        for point in &s.key_points {
            body.push_str(&format!("- {point} [{}]\n", s.source_id));
        }
    }
    if !req.gaps.is_empty() {
        body.push_str("\n## Gaps\n");
        for g in &req.gaps {
            body.push_str(&format!(
                "- {} ({}) could not be read ({}); its findings are not reflected here.\n",
                g.source_id, g.url, g.error_type
            ));
        }
    }
    body.push_str("\n## Sources\n");
    for s in &req.summaries {
        body.push_str(&format!("- [{}] {}: {}\n", s.source_id, s.title, s.url));
    }
    Draft {
        revision: 1,
        title: format!("{}: research brief", req.topic),
        body,
        cited: req.summaries.iter().map(|s| s.source_id.clone()).collect(),
        gaps: req.gaps.iter().map(|g| g.source_id.clone()).collect(),
    }
}

fn revise(req: ReviseRequest) -> Draft {
    let mut draft = req.draft;
    draft.revision += 1;
    draft.body.push_str(&format!(
        "\n## Revision {} (round {} of review)\nReviewer asked: \"{}\". This revision addresses it.\n",
        draft.revision, req.round, req.feedback
    ));
    draft
}

fn slug(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join("-")
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}
