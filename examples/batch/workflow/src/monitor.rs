//! `monitor`: checks a target every minute, raises and resolves alerts, and
//! runs until told to stop — without a history that grows for ever.
//!
//! A run does at most `checks_per_run` (1,000) checks, then continues as new
//! ([`Context::continue_as_new`]) with its [`Summary`] in the next run's
//! input: counts, latency, the consecutive failures and the open incident
//! all carry over, so an outage that spans two runs raises one alert, not
//! two. Each run's history stays at about six events per check.
//!
//! Input: `{"target": "https://shop.example/health"}`, optionally with
//! `"interval_secs": 60`, `"checks_per_run": 1000`, `"alert_after": 3`
//! and `"summary"` (what the run before this one handed over; absent for
//! the first run).
//!
//! Each check calls activity `probe` `{"target", "check"}` (`check` counts
//! from 1 across runs) → `{"healthy", "status", "latency_ms"}`, retried 1 s
//! and 2 s later (three attempts); a probe that fails all three counts as a
//! failed check. After `alert_after` failed checks in a row it calls `alert`
//! `{"target", "since_check", "failed_checks"}` → `{"incident"}` once; the
//! first healthy check after that calls `resolve` `{"target", "incident",
//! "check"}`.
//!
//! Signal `stop` (`{"reason": "…"}`, the reason optional) ends the workflow
//! at the next check boundary. A `stop` is never lost to a continue-as-new:
//! the workflow takes every `stop` delivered to a run before it continues
//! as new (the wait between checks listens for it, and a stop that arrives
//! during a probe is buffered for that wait), and the host moves signals not
//! yet delivered to the next run. Signals go to a run id: send them to the
//! workflow id's open run.
//!
//! Query `summary`: the [`Summary`] so far. The status line says whether the
//! target is up, failing or alerting, and how many checks were done.
//!
//! Output: `{"target", "stopped_because", "summary": Summary,
//! "mean_latency_ms"}`.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use weft_sdk::{Context, Either, RetryPolicy, WorkflowError, select};

/// The monitor's input; a run that continues as new hands the next one the
/// same settings and its summary.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct MonitorInput {
    target: String,
    #[serde(default = "default_interval_secs")]
    interval_secs: u64,
    #[serde(default = "default_checks_per_run")]
    checks_per_run: u64,
    #[serde(default = "default_alert_after")]
    alert_after: u32,
    #[serde(default)]
    summary: Summary,
}

fn default_interval_secs() -> u64 {
    60
}

fn default_checks_per_run() -> u64 {
    1_000
}

fn default_alert_after() -> u32 {
    3
}

/// What the monitor knows after all checks so far, across runs.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// Checks done (all runs).
    checks: u64,
    healthy: u64,
    failed: u64,
    /// Failed checks since the last healthy one.
    consecutive_failed: u32,
    /// The alert raised for the ongoing outage, until it is resolved.
    open_incident: Option<String>,
    alerts: u32,
    /// Sum and maximum of the healthy checks' latencies.
    latency_total_ms: u64,
    slowest_ms: u64,
    /// This run's number: 1 for the first, one more per continue-as-new.
    run: u32,
}

#[derive(Serialize)]
struct ProbeRequest<'a> {
    target: &'a str,
    check: u64,
}

#[derive(Deserialize)]
struct Probe {
    healthy: bool,
    latency_ms: u64,
}

#[derive(Serialize)]
struct AlertRequest<'a> {
    target: &'a str,
    since_check: u64,
    failed_checks: u32,
}

#[derive(Deserialize)]
struct Incident {
    incident: String,
}

#[derive(Serialize)]
struct ResolveRequest<'a> {
    target: &'a str,
    incident: &'a str,
    check: u64,
}

/// The payload of signal `stop`.
#[derive(Deserialize)]
struct Stop {
    #[serde(default)]
    reason: String,
}

/// The monitor's output.
#[derive(Serialize)]
pub(crate) struct MonitorReport {
    target: String,
    stopped_because: String,
    mean_latency_ms: u64,
    summary: Summary,
}

/// Checks, alerts, continues as new, stops; see the [module docs](self).
pub(crate) async fn monitor(
    ctx: Context,
    input: MonitorInput,
) -> Result<MonitorReport, WorkflowError> {
    let stop = ctx.signal::<Stop>("stop");
    let summary = Rc::new(RefCell::new(input.summary.clone()));
    summary.borrow_mut().run += 1;
    ctx.on_query("summary", {
        let summary = Rc::clone(&summary);
        move || summary.borrow().clone()
    });
    let interval = Duration::from_secs(input.interval_secs);
    let mut state = State::of(&summary.borrow());
    ctx.set_status_line(&status_line(&summary.borrow(), state));

    for _ in 0..input.checks_per_run {
        check(&ctx, &input, &summary).await?;
        let now = State::of(&summary.borrow());
        if now != state {
            // Only on a change: a line per check would double the history.
            ctx.set_status_line(&status_line(&summary.borrow(), now));
            state = now;
        }
        if let Either::Left(stop) = select(stop.recv(), ctx.sleep(interval)).await {
            let summary = summary.borrow().clone();
            ctx.set_status_line(&format!("stopped after {} checks", summary.checks));
            return Ok(MonitorReport {
                target: input.target,
                stopped_because: stop.reason,
                mean_latency_ms: summary.latency_total_ms / summary.healthy.max(1),
                summary,
            });
        }
    }
    // Every `stop` delivered to this run was taken by the wait above (it is
    // polled before the timer), so none is left behind here.
    let next = MonitorInput {
        summary: summary.borrow().clone(),
        ..input
    };
    Err(ctx.continue_as_new(&next))
}

/// One check: probe, count, raise or resolve the alert.
async fn check(
    ctx: &Context,
    input: &MonitorInput,
    summary: &Rc<RefCell<Summary>>,
) -> Result<(), WorkflowError> {
    let number = summary.borrow().checks + 1;
    let probe = ctx
        .activity::<Probe>(
            "probe",
            &ProbeRequest {
                target: &input.target,
                check: number,
            },
        )
        .retry(RetryPolicy {
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            maximum_attempts: 3,
            ..RetryPolicy::default()
        })
        .await;
    let healthy = {
        let mut s = summary.borrow_mut();
        s.checks = number;
        match probe {
            Ok(Probe {
                healthy: true,
                latency_ms,
            }) => {
                s.healthy += 1;
                s.consecutive_failed = 0;
                s.latency_total_ms += latency_ms;
                s.slowest_ms = s.slowest_ms.max(latency_ms);
                true
            }
            // An unhealthy answer and a probe that could not get one at all
            // both mean the target is not serving.
            Ok(_) | Err(_) => {
                s.failed += 1;
                s.consecutive_failed += 1;
                false
            }
        }
    };
    let (failed_in_a_row, incident) = {
        let s = summary.borrow();
        (s.consecutive_failed, s.open_incident.clone())
    };
    match incident {
        None if !healthy && failed_in_a_row >= input.alert_after => {
            let raised: Incident = ctx
                .activity(
                    "alert",
                    &AlertRequest {
                        target: &input.target,
                        since_check: number + 1 - u64::from(failed_in_a_row),
                        failed_checks: failed_in_a_row,
                    },
                )
                .await?;
            let mut s = summary.borrow_mut();
            s.open_incident = Some(raised.incident);
            s.alerts += 1;
        }
        Some(incident) if healthy => {
            let _: IgnoredAny = ctx
                .activity(
                    "resolve",
                    &ResolveRequest {
                        target: &input.target,
                        incident: &incident,
                        check: number,
                    },
                )
                .await?;
            summary.borrow_mut().open_incident = None;
        }
        _ => {}
    }
    Ok(())
}

/// What the status line reports, so it changes only when this does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    Failing,
    Alerting,
}

impl State {
    fn of(summary: &Summary) -> Self {
        match (&summary.open_incident, summary.consecutive_failed) {
            (Some(_), _) => State::Alerting,
            (None, 0) => State::Up,
            (None, _) => State::Failing,
        }
    }
}

fn status_line(summary: &Summary, state: State) -> String {
    let what = match state {
        State::Up => "up",
        State::Failing => "failing",
        State::Alerting => "down, alert raised",
    };
    format!("run {}: {what} at check {}", summary.run, summary.checks)
}
