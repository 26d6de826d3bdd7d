//! What one run may hold: pending work, commands per activation, history
//! size and search attributes. Temporal's published defaults are the
//! reference; each limit names its setting in the error it gives, and
//! `weft server`/`weft dev` take each as a flag and an environment variable.
//!
//! Signals and updates past their limits are refused to their sender
//! (ResourceExhausted, HTTP 429), who may send again once the workflow has
//! caught up. Guest-side limits (pending work, commands, search attributes) stop the
//! activation that would cross them: the run is parked as stuck with the
//! reason, nothing of that activation is recorded, and a fixed module
//! resumes it. History limits are the host's: past the warning size the host
//! logs once per run; past the maximum it terminates the run, recording
//! the reason in its history, as Temporal does.

/// Limits on one run. [`Default`] gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunLimits {
    /// Activities scheduled and not yet resolved, at most (`--max-pending-activities`).
    pub max_pending_activities: usize,
    /// Timers started and neither fired nor cancelled, at most (`--max-pending-timers`).
    pub max_pending_timers: usize,
    /// Child workflows started and not yet resolved, at most (`--max-pending-children`).
    pub max_pending_children: usize,
    /// Signals sent to a run and not yet taken by it, at most
    /// (`--max-pending-signals`): a sender past it is refused, and may send
    /// again once the workflow catches up.
    pub max_pending_signals: usize,
    /// Updates sent to a run and not yet answered, at most (`--max-updates-in-flight`).
    pub max_updates_in_flight: usize,
    /// Commands one activation may issue (`--max-commands-per-activation`).
    pub max_commands_per_activation: usize,
    /// Bytes of a run's search attributes (their JSON text), at most
    /// (`--max-search-attribute-bytes`).
    pub max_search_attribute_bytes: usize,
    /// Events in a history at which the host warns (`--warn-history-events`).
    pub warn_history_events: u64,
    /// Bytes of a history at which the host warns (`--warn-history-bytes`).
    pub warn_history_bytes: u64,
    /// Events in a history at which the host terminates the run (`--max-history-events`).
    pub max_history_events: u64,
    /// Bytes of a history at which the host terminates the run (`--max-history-bytes`).
    pub max_history_bytes: u64,
    /// Bytes of log output (stdout, stderr and the `log` import together)
    /// one activation may write (`--max-log-bytes-per-activation`); the rest
    /// of that activation's output is dropped, with one warning saying how
    /// much.
    pub max_log_bytes_per_activation: u64,
    /// Handles (WASI streams, pollables) one instance may hold at once
    /// (`--max-guest-resources`): past it the guest call traps and the run
    /// is parked with the reason.
    pub max_guest_resources: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_pending_activities: 2_000,
            max_pending_timers: 2_000,
            max_pending_children: 2_000,
            max_pending_signals: 2_000,
            max_updates_in_flight: 10,
            max_commands_per_activation: 10_000,
            max_search_attribute_bytes: 40 << 10,
            warn_history_events: 10_240,
            warn_history_bytes: 10 << 20,
            max_history_events: 51_200,
            max_history_bytes: 50 << 20,
            max_log_bytes_per_activation: 1 << 20,
            max_guest_resources: 10_000,
        }
    }
}

impl RunLimits {
    /// Why a history of `events` events and `bytes` bytes may grow no more,
    /// if it may not: the reason the run is terminated with.
    pub(crate) fn history_over(&self, events: u64, bytes: u64) -> Option<String> {
        if events >= self.max_history_events {
            Some(format!(
                "the history reached {events} events, the limit of {} (--max-history-events): a long-running workflow must continue-as-new before its history grows this long",
                self.max_history_events
            ))
        } else if bytes >= self.max_history_bytes {
            Some(format!(
                "the history reached {bytes} bytes, the limit of {} (--max-history-bytes): pass references (ids, URLs) instead of large payloads, and continue-as-new before the history grows this large",
                self.max_history_bytes
            ))
        } else {
            None
        }
    }

    /// Whether a history growing from `before` to `after` (events, bytes)
    /// crossed a warning size.
    pub(crate) fn history_warning_crossed(&self, before: (u64, u64), after: (u64, u64)) -> bool {
        (before.0 < self.warn_history_events && after.0 >= self.warn_history_events)
            || (before.1 < self.warn_history_bytes && after.1 >= self.warn_history_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_limits_name_their_setting() {
        let limits = RunLimits::default();
        assert_eq!(limits.history_over(51_199, 0), None);
        let reason = limits.history_over(51_200, 0).unwrap();
        assert!(reason.contains("--max-history-events"), "{reason}");
        let reason = limits.history_over(3, 50 << 20).unwrap();
        assert!(reason.contains("--max-history-bytes"), "{reason}");
        assert!(limits.history_warning_crossed((10_239, 0), (10_240, 0)));
        assert!(!limits.history_warning_crossed((10_240, 0), (10_300, 0)));
        assert!(limits.history_warning_crossed((5, (10 << 20) - 1), (6, 10 << 20)));
    }
}
