//! The host's metrics in the Prometheus text format, served at `GET
//! /metrics` (and [`Host::metrics_text`](crate::Host::metrics_text)). They
//! count what this process did since it started; Prometheus sums them over
//! hosts. For alerts: a rising `weft_runs_closed_total{status="stuck"}` (a
//! run parked on a nondeterminism or a trap), a rising
//! `weft_activations_total{result="failed"}` (the database or a module is
//! failing), `weft_activations_in_flight` pinned at the host's limit, any
//! `weft_unsealable_runs_total` (a closed history that does not verify: the
//! database was altered).

use crate::store::RunStatus;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// How an activation ended, as `weft_activations_total` labels it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ActivationResult {
    /// Its commit landed.
    Committed,
    /// Another host took the run over; nothing was written.
    Conflict,
    /// No free instance slot; the run is tried again.
    Busy,
    /// It failed (the database, the module) and is retried.
    Failed,
}

/// Where an activity attempt ran.
#[derive(Clone, Copy, Debug)]
pub(crate) enum AttemptPlace {
    Host,
    Worker,
}

pub(crate) struct Metrics {
    registry: Registry,
    runs_started: Counter,
    runs_closed: Family<Labels, Counter>,
    activations: Family<Labels, Counter>,
    activation_seconds: Histogram,
    activations_in_flight: Gauge,
    activity_attempts: Family<Labels2, Counter>,
    runs_sealed: Counter,
    unsealable_runs: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("weft");
        let runs_started = Counter::default();
        registry.register(
            "runs_started",
            "Runs this host created (start, signal-with-start)",
            runs_started.clone(),
        );
        let runs_closed = Family::<Labels, Counter>::default();
        registry.register(
            "runs_closed",
            "Runs this host's activations closed or parked, by status",
            runs_closed.clone(),
        );
        let activations = Family::<Labels, Counter>::default();
        registry.register(
            "activations",
            "Activations this host ran, by result (committed, conflict, busy, failed)",
            activations.clone(),
        );
        let activation_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "activation_duration_seconds",
            "Wall time of one activation: load or replay, run the guest, commit",
            activation_seconds.clone(),
        );
        let activations_in_flight = Gauge::default();
        registry.register(
            "activations_in_flight",
            "Activations running now",
            activations_in_flight.clone(),
        );
        let activity_attempts = Family::<Labels2, Counter>::default();
        registry.register(
            "activity_attempts",
            "Activity attempts whose outcome this host recorded, by where they ran and how they ended (completed, retry, failed)",
            activity_attempts.clone(),
        );
        let runs_sealed = Counter::default();
        registry.register(
            "runs_sealed",
            "Closed runs this host sealed (a host with a signing key)",
            runs_sealed.clone(),
        );
        let unsealable_runs = Counter::default();
        registry.register(
            "unsealable_runs",
            "Times this host's seal loop found a closed run whose history does not verify",
            unsealable_runs.clone(),
        );
        Self {
            registry,
            runs_started,
            runs_closed,
            activations,
            activation_seconds,
            activations_in_flight,
            activity_attempts,
            runs_sealed,
            unsealable_runs,
        }
    }
}

impl Metrics {
    pub(crate) fn run_started(&self) {
        self.runs_started.inc();
    }

    pub(crate) fn run_closed(&self, status: RunStatus) {
        self.runs_closed
            .get_or_create(&[("status", status.as_str())])
            .inc();
    }

    /// An activation began: counts it in flight until `activation_ended`.
    pub(crate) fn activation_began(&self) {
        self.activations_in_flight.inc();
    }

    pub(crate) fn activation_ended(&self, result: ActivationResult, seconds: f64) {
        self.activations_in_flight.dec();
        self.activation_done(result, seconds);
    }

    /// An activation that ran inside another request (a start's first
    /// activation, a warm run's step committed with an activity's result)
    /// and committed: counted and timed like the activation loop's, though
    /// never counted in flight.
    pub(crate) fn activation_committed_inline(&self, seconds: f64) {
        self.activation_done(ActivationResult::Committed, seconds);
    }

    fn activation_done(&self, result: ActivationResult, seconds: f64) {
        let result = match result {
            ActivationResult::Committed => "committed",
            ActivationResult::Conflict => "conflict",
            ActivationResult::Busy => "busy",
            ActivationResult::Failed => "failed",
        };
        self.activations.get_or_create(&[("result", result)]).inc();
        self.activation_seconds.observe(seconds);
    }

    /// An attempt's outcome was recorded; `outcome` is `completed`, `retry` or `failed`.
    pub(crate) fn attempt_recorded(&self, place: AttemptPlace, outcome: &'static str) {
        let place = match place {
            AttemptPlace::Host => "host",
            AttemptPlace::Worker => "worker",
        };
        self.activity_attempts
            .get_or_create(&[("place", place), ("outcome", outcome)])
            .inc();
    }

    pub(crate) fn run_sealed(&self) {
        self.runs_sealed.inc();
    }

    pub(crate) fn run_unsealable(&self) {
        self.unsealable_runs.inc();
    }

    /// Everything, in the Prometheus text format.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String does not fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_appear_in_the_text_format() {
        let m = Metrics::default();
        m.run_started();
        m.run_closed(RunStatus::Completed);
        m.run_closed(RunStatus::Stuck);
        m.run_closed(RunStatus::Stuck);
        m.activation_began();
        m.activation_began();
        m.activation_ended(ActivationResult::Committed, 0.002);
        m.attempt_recorded(AttemptPlace::Worker, "retry");
        let text = m.text();
        for line in [
            "weft_runs_started_total 1",
            "weft_runs_closed_total{status=\"completed\"} 1",
            "weft_runs_closed_total{status=\"stuck\"} 2",
            "weft_activations_total{result=\"committed\"} 1",
            "weft_activations_in_flight 1",
            "weft_activation_duration_seconds_count 1",
            "weft_activity_attempts_total{place=\"worker\",outcome=\"retry\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
    }
}
