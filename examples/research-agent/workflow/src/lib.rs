//! The `research_agent` workflow: researches a topic from several sources at
//! once, drafts a brief, and takes it through a bounded human review.
//!
//! 1. **Fan-out.** One `fetch_and_summarise` activity per source, all in
//!    flight together ([`join_all`]). Each is retried by its policy (30 s,
//!    doubling, four attempts in all); a source that still fails is not fatal:
//!    the draft goes ahead with the others and names the gap. Only when fewer
//!    than `min_sources` answer does the run fail, with `NotEnoughSources`.
//! 2. **Draft.** The `draft` activity writes revision 1 from the summaries
//!    and the gaps.
//! 3. **Review.** The workflow waits up to `review_timeout_hours` (48) for a
//!    `review` signal. Approval publishes the draft (`publish`). Feedback
//!    sends it back through `revise` and the wait starts again, with a fresh
//!    deadline, at most `max_revisions` (3) times; feedback on the last
//!    revision escalates instead. When a wait passes with no review at all,
//!    the workflow **escalates** (`escalate`) rather than publish unreviewed
//!    work: the run completes with outcome `escalated` and the draft it had,
//!    for an editor to pick up.
//!
//! Input (`Brief`): `{"topic": "…", "sources": [{"id": "iea", "url":
//! "https://…"}, …]}`, optionally with `"review_timeout_hours": 48`,
//! `"max_revisions": 3` and `"min_sources": 3`.
//!
//! Signal `review`: `{"approved": true, "feedback": ""}` or `{"approved":
//! false, "feedback": "cite the field study's sample size"}`. Reviews are
//! read in the order they arrive; each applies to the draft that is current
//! when the workflow reads it (one sent while a revision is being written
//! reviews that revision).
//!
//! Query `draft`: the current [`Draft`] (`null` until the first one exists).
//! The run's status line names the stage: `researching 5 sources`,
//! `drafting from 4 of 5 sources`, `awaiting review of revision 1 (up to 48 h)`,
//! `revising after feedback 1 of 3`, `publishing revision 2`, `published`,
//! `escalated: …`.
//!
//! Output (`Report`): the outcome (`published` or `escalated`), the last
//! draft, every review received, the sources used and the gaps, and the
//! published URL or the escalation ticket.
//!
//! Activities it calls:
//! - `fetch_and_summarise` `{"topic", "source": {"id", "url"}}` → `Summary`
//!   `{"source_id", "url", "title", "summary", "key_points": [..]}`;
//! - `draft` `{"topic", "summaries": [Summary], "gaps": [Gap]}` → `Draft`;
//! - `revise` `{"topic", "draft": Draft, "feedback", "round"}` → `Draft`;
//! - `publish` `{"topic", "draft": Draft}` → `{"url"}`;
//! - `escalate` `{"topic", "draft": Draft, "reason"}` → `{"ticket"}`.

use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use weft_sdk::{Context, Either, RetryPolicy, WorkflowError, join_all, select};

/// What to research.
#[derive(Deserialize)]
struct Brief {
    topic: String,
    sources: Vec<Source>,
    /// How long each wait for a review lasts.
    #[serde(default = "default_review_timeout_hours")]
    review_timeout_hours: u64,
    /// How many times feedback may send the draft back before it escalates.
    #[serde(default = "default_max_revisions")]
    max_revisions: u32,
    /// Fewer answering sources than this fails the run.
    #[serde(default = "default_min_sources")]
    min_sources: usize,
}

fn default_review_timeout_hours() -> u64 {
    48
}

fn default_max_revisions() -> u32 {
    3
}

fn default_min_sources() -> usize {
    3
}

/// One place to read.
#[derive(Clone, Serialize, Deserialize)]
struct Source {
    id: String,
    url: String,
}

/// The input of `fetch_and_summarise`.
#[derive(Serialize)]
struct FetchRequest<'a> {
    topic: &'a str,
    source: &'a Source,
}

/// What `fetch_and_summarise` found in one source.
#[derive(Clone, Serialize, Deserialize)]
struct Summary {
    source_id: String,
    url: String,
    title: String,
    summary: String,
    key_points: Vec<String>,
}

/// A source that could not be read, and why: the draft names it.
#[derive(Clone, Serialize, Deserialize)]
struct Gap {
    source_id: String,
    url: String,
    error_type: String,
    message: String,
}

/// The input of `draft`.
#[derive(Serialize)]
struct DraftRequest<'a> {
    topic: &'a str,
    summaries: &'a [Summary],
    gaps: &'a [Gap],
}

/// A version of the brief, as `draft` and `revise` write it.
#[derive(Clone, Serialize, Deserialize)]
struct Draft {
    /// 1 for the first draft, one more for each revision.
    revision: u32,
    title: String,
    /// Markdown.
    body: String,
    /// The ids of the sources it draws on.
    cited: Vec<String>,
    /// The ids of the sources it says are missing.
    gaps: Vec<String>,
}

/// The payload of the `review` signal.
#[derive(Clone, Serialize, Deserialize)]
struct Review {
    approved: bool,
    #[serde(default)]
    feedback: String,
}

/// The input of `revise`.
#[derive(Serialize)]
struct ReviseRequest<'a> {
    topic: &'a str,
    draft: &'a Draft,
    feedback: &'a str,
    round: u32,
}

/// The input of `publish`.
#[derive(Serialize)]
struct PublishRequest<'a> {
    topic: &'a str,
    draft: &'a Draft,
}

/// The output of `publish`.
#[derive(Deserialize)]
struct Published {
    url: String,
}

/// The input of `escalate`.
#[derive(Serialize)]
struct EscalateRequest<'a> {
    topic: &'a str,
    draft: &'a Draft,
    reason: &'a str,
}

/// The output of `escalate`.
#[derive(Deserialize)]
struct Escalated {
    ticket: String,
}

#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Published,
    Escalated,
}

/// A review as the report keeps it: which revision it was about.
#[derive(Serialize)]
struct ReviewRecord {
    revision: u32,
    approved: bool,
    feedback: String,
}

/// The workflow's output.
#[derive(Serialize)]
struct Report {
    topic: String,
    outcome: Outcome,
    draft: Draft,
    reviews: Vec<ReviewRecord>,
    sources_used: Vec<String>,
    gaps: Vec<Gap>,
    /// Set when published.
    url: Option<String>,
    /// Set when escalated.
    ticket: Option<String>,
    /// Why it was escalated.
    escalation_reason: Option<String>,
}

/// Researches, drafts, and takes the draft through review; see the
/// [crate docs](crate).
async fn research_agent(ctx: Context, brief: Brief) -> Result<Report, WorkflowError> {
    let current: Rc<RefCell<Option<Draft>>> = Rc::new(RefCell::new(None));
    ctx.on_query("draft", {
        let current = Rc::clone(&current);
        move || current.borrow().clone()
    });
    // Registered before anything waits, so no review is missed.
    let reviews = ctx.signal::<Review>("review");

    let (summaries, gaps) = research(&ctx, &brief).await;
    if summaries.len() < brief.min_sources {
        let missing: Vec<&str> = gaps.iter().map(|g| g.source_id.as_str()).collect();
        return Err(WorkflowError::new(
            "NotEnoughSources",
            format!(
                "only {} of {} sources answered (at least {} are needed); unreachable: {}",
                summaries.len(),
                brief.sources.len(),
                brief.min_sources,
                missing.join(", ")
            ),
        ));
    }
    if !gaps.is_empty() {
        ctx.log_warn(&format!(
            "drafting without {} unreachable source(s)",
            gaps.len()
        ));
    }

    ctx.set_status_line(&format!(
        "drafting from {} of {} sources",
        summaries.len(),
        brief.sources.len()
    ));
    let mut draft: Draft = ctx
        .activity(
            "draft",
            &DraftRequest {
                topic: &brief.topic,
                summaries: &summaries,
                gaps: &gaps,
            },
        )
        .retry(model_retry())
        .await?;
    *current.borrow_mut() = Some(draft.clone());

    let timeout = Duration::from_secs(brief.review_timeout_hours * 3600);
    let mut history = Vec::new();
    let mut revisions = 0;
    let escalation_reason = loop {
        ctx.set_status_line(&format!(
            "awaiting review of revision {} (up to {} h)",
            draft.revision, brief.review_timeout_hours
        ));
        let review = match select(reviews.recv(), ctx.sleep(timeout)).await {
            Either::Left(review) => review,
            Either::Right(()) => {
                break format!(
                    "no review of revision {} within {} hours",
                    draft.revision, brief.review_timeout_hours
                );
            }
        };
        history.push(ReviewRecord {
            revision: draft.revision,
            approved: review.approved,
            feedback: review.feedback.clone(),
        });
        if review.approved {
            ctx.set_status_line(&format!("publishing revision {}", draft.revision));
            let published: Published = ctx
                .activity(
                    "publish",
                    &PublishRequest {
                        topic: &brief.topic,
                        draft: &draft,
                    },
                )
                .await?;
            ctx.set_status_line("published");
            return Ok(Report {
                topic: brief.topic,
                outcome: Outcome::Published,
                sources_used: draft.cited.clone(),
                draft,
                reviews: history,
                gaps,
                url: Some(published.url),
                ticket: None,
                escalation_reason: None,
            });
        }
        if revisions == brief.max_revisions {
            break format!(
                "revision {} was still not approved after {} rounds of feedback",
                draft.revision, brief.max_revisions
            );
        }
        revisions += 1;
        ctx.set_status_line(&format!(
            "revising after feedback {revisions} of {}",
            brief.max_revisions
        ));
        draft = ctx
            .activity(
                "revise",
                &ReviseRequest {
                    topic: &brief.topic,
                    draft: &draft,
                    feedback: &review.feedback,
                    round: revisions,
                },
            )
            .retry(model_retry())
            .await?;
        *current.borrow_mut() = Some(draft.clone());
    };

    ctx.log_warn(&format!("escalating: {escalation_reason}"));
    let escalated: Escalated = ctx
        .activity(
            "escalate",
            &EscalateRequest {
                topic: &brief.topic,
                draft: &draft,
                reason: &escalation_reason,
            },
        )
        .await?;
    ctx.set_status_line(&format!("escalated: {escalation_reason}"));
    Ok(Report {
        topic: brief.topic,
        outcome: Outcome::Escalated,
        sources_used: draft.cited.clone(),
        draft,
        reviews: history,
        gaps,
        url: None,
        ticket: Some(escalated.ticket),
        escalation_reason: Some(escalation_reason),
    })
}

/// Reads every source at once; returns what answered, in the order of the
/// brief, and the sources that did not.
async fn research(ctx: &Context, brief: &Brief) -> (Vec<Summary>, Vec<Gap>) {
    ctx.set_status_line(&format!("researching {} sources", brief.sources.len()));
    let fetches = brief.sources.iter().map(|source| {
        ctx.activity::<Summary>(
            "fetch_and_summarise",
            &FetchRequest {
                topic: &brief.topic,
                source,
            },
        )
        .retry(RetryPolicy {
            initial_interval: Duration::from_secs(30),
            backoff_coefficient: 2.0,
            maximum_attempts: 4,
            // A page that does not exist will not appear on a retry.
            non_retryable_error_types: vec!["SourceNotFound".to_owned()],
            ..RetryPolicy::default()
        })
    });
    let mut summaries = Vec::new();
    let mut gaps = Vec::new();
    for (source, outcome) in brief.sources.iter().zip(join_all(fetches).await) {
        match outcome {
            Ok(summary) => summaries.push(summary),
            Err(error) => gaps.push(Gap {
                source_id: source.id.clone(),
                url: source.url.clone(),
                error_type: error.error_type().to_owned(),
                message: error.message().to_owned(),
            }),
        }
    }
    (summaries, gaps)
}

/// Drafting and revising call a language model: rate limits pass, so retry
/// them for a while (5 s, doubling, up to 2 min apart, six attempts).
fn model_retry() -> RetryPolicy {
    RetryPolicy {
        initial_interval: Duration::from_secs(5),
        backoff_coefficient: 2.0,
        maximum_interval: Duration::from_secs(120),
        maximum_attempts: 6,
        non_retryable_error_types: Vec::new(),
    }
}

weft_sdk::export_workflows!(research_agent);
