//! `weft.v1.WorkerService`: remote activity workers long-poll for attempts,
//! run them, and report back.
//!
//! An attempt is claimed for a worker exactly as for a host's own activity
//! loop (`claim_activities` by name, under a lease as long as its
//! start-to-close timeout), so the in-process and remote paths share every
//! rule: retries, timeouts, heartbeats, cancellation. The worker is trusted
//! with the attempt's outcome only; whether a failure is retried is decided
//! here by the retry policy and deadline stored with the task.
//!
//! A poll that finds nothing to claim waits in line
//! ([`Handoff`](crate::activity::Handoff)): an activation that schedules a
//! task the worker serves writes it already claimed for that worker, and the
//! poll answers with it once that commit applied. A poll asks for up to
//! `max_tasks` at once (a worker's free slots); one without it gets one task.
//!
//! Each task goes out with a [`TaskToken`]: the attempt it names, MAC'd
//! with the database's key and bound to the worker credential that polled
//! it. Complete, fail and heartbeat take the attempt only from a token
//! whose MAC holds for their own credential.
//!
//! A poll whose caller goes away between the claim and the answer leaves
//! the attempt claimed for nobody: it is retried once its lease expires
//! (at least once, as every attempt).

use super::auth::{Credential, Role};
use super::mapping::status;
use super::proto::{self, worker_service_server::WorkerService};
use super::task_token::{TaskToken, TaskTokenKey};
use crate::activity::{ActivityError, exhausted, outcome_of_failure};
use crate::host::{Host, HostInner};
use crate::model::Failure;
use crate::scheduler::record_attempt;
use crate::store::{ActivityTask, AttemptOutcome, FinishedAttempt, Heartbeat, StoreError};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// How long a poll waits for a task when the worker names no limit.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
const MAX_WAIT: Duration = Duration::from_secs(60);
/// The most tasks one poll claims: one statement, one commit, however many.
const MAX_TASKS_PER_POLL: u32 = 100;

pub(crate) struct Workers {
    host: Arc<HostInner>,
}

pub(crate) fn server(host: &Host) -> proto::worker_service_server::WorkerServiceServer<Workers> {
    proto::worker_service_server::WorkerServiceServer::new(Workers {
        host: host.inner().clone(),
    })
    .max_decoding_message_size(crate::client::MAX_MESSAGE_BYTES)
    .max_encoding_message_size(crate::client::MAX_MESSAGE_BYTES)
}

impl Workers {
    fn now(&self) -> u64 {
        self.host.clock.now_ms()
    }

    /// The database's task-token key (read once, at the API's start).
    async fn key(&self) -> Result<TaskTokenKey, Status> {
        let key = self
            .host
            .task_token_key()
            .await
            .map_err(|e| status(e.into()))?;
        Ok(TaskTokenKey::new(key))
    }

    /// The attempt a report's `task_token` names, if it was handed to the
    /// caller's credential.
    async fn attempt_of<T>(&self, request: &Request<T>, token: &str) -> Result<TaskToken, Status> {
        let key = self.key().await?;
        TaskToken::verify(token, &key, &credential(request))
    }

    fn default_lease_ms(&self) -> u64 {
        self.host.config.default_start_to_close.as_millis() as u64
    }

    /// Parses a JSON payload from a worker and holds it to the payload limit.
    fn payload(
        &self,
        field: &str,
        text: &str,
        what: impl FnOnce() -> String,
    ) -> Result<Value, PayloadError> {
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(text)
                .map_err(|e| PayloadError::Invalid(format!("{field} is not valid JSON: {e}")))?
        };
        let limit = self.host.config.engine.max_payload_bytes;
        if text.len() > limit {
            return Err(PayloadError::TooLarge(format!(
                "{} is {} bytes, over the limit of {limit} bytes; return a reference (an id, a URL) instead of the data",
                what(),
                text.len()
            )));
        }
        Ok(value)
    }

    /// A worker token scoped to named activities reports only on those: the
    /// task's name is read (one look-up, only for such tokens). A task that
    /// is no longer current is left to the call's own stale answer.
    async fn check_scope(&self, role: Option<&Role>, token: &TaskToken) -> Result<(), Status> {
        if !role.is_some_and(Role::is_scoped) {
            return Ok(());
        }
        let task = self
            .host
            .store
            .current_attempt(&token.run_id, token.seq, token.lease_token)
            .await
            .map_err(|e| status(e.into()))?;
        match task {
            Some(task) => scope_check(role, token, &task.name),
            None => Ok(()),
        }
    }

    /// Records how an attempt ended; a stale attempt is refused.
    async fn finish(&self, token: &TaskToken, outcome: AttemptOutcome) -> Result<(), Status> {
        let retry = matches!(outcome, AttemptOutcome::Retry { .. });
        let label = outcome.label();
        let finished = FinishedAttempt {
            run_id: token.run_id.clone(),
            seq: token.seq,
            lease_token: token.lease_token,
            attempt: token.attempt,
            outcome,
            now_ms: self.now(),
        };
        match record_attempt(&self.host, finished).await {
            Ok(()) => {
                self.host
                    .metrics
                    .attempt_recorded(crate::metrics::AttemptPlace::Worker, label);
                if retry {
                    // The retry becomes visible later; pollers and the sweep look again.
                    self.host.wakeups.activities_ready();
                    self.host.wakeups.timeouts.notify_one();
                }
                Ok(())
            }
            Err(StoreError::Conflict { reason, .. }) => Err(token.stale(&reason)),
            Err(e) => Err(status(e.into())),
        }
    }

    /// The answer to a poll: the tasks that still have time to run (one in
    /// `task` for a poll that asked for none in particular, all in `tasks`
    /// for one that named `max_tasks`). A task claimed after its
    /// schedule-to-close deadline is failed here instead.
    async fn answer(
        &self,
        claimed: Vec<ActivityTask>,
        batch: bool,
        poller: &Poller<'_>,
    ) -> Result<Response<proto::PollActivityTaskResponse>, Status> {
        let mut tasks = Vec::with_capacity(claimed.len());
        for task in claimed {
            if let Some(outcome) = exhausted(&task) {
                let _ = self.finish(&TaskToken::of(&task), outcome).await;
                continue;
            }
            tracing::debug!(run_id = %task.run_id, seq = task.seq, activity = %task.name, attempt = task.attempt, worker_id = poller.id, "an activity attempt went to a remote worker");
            tasks.push(self.task(&task, poller));
        }
        if tasks.iter().any(|t| t.heartbeat_timeout_ms > 0) {
            self.host.wakeups.timeouts.notify_one();
        }
        Ok(Response::new(if batch {
            proto::PollActivityTaskResponse { task: None, tasks }
        } else {
            // A poll without max_tasks is in line for one task at most.
            proto::PollActivityTaskResponse {
                task: tasks.pop(),
                tasks: Vec::new(),
            }
        }))
    }

    fn task(&self, task: &ActivityTask, poller: &Poller<'_>) -> proto::ActivityTask {
        proto::ActivityTask {
            task_token: TaskToken::of(task).encode(poller.key, poller.credential),
            activity_name: task.name.clone(),
            input_json: task.input.to_string(),
            attempt: task.attempt,
            idempotency_key: format!("{}-{}", task.run_id, task.seq),
            heartbeat_details_json: task.heartbeat_details.as_ref().map(Value::to_string),
            start_to_close_timeout_ms: match task.options.start_to_close_timeout_ms {
                0 => self.default_lease_ms(),
                t => t,
            },
            heartbeat_timeout_ms: task.options.heartbeat_timeout_ms,
            run_id: task.run_id.to_string(),
            seq: task.seq,
        }
    }
}

enum PayloadError {
    Invalid(String),
    TooLarge(String),
}

/// The poller that tasks are answered to: its id (for the log) and what
/// its task tokens are bound to.
struct Poller<'a> {
    id: &'a str,
    key: &'a TaskTokenKey,
    credential: &'a Credential,
}

/// The credential a request came with, as the auth layer found it; none
/// without that layer (then nothing is checked, as for an open host).
fn credential<T>(request: &Request<T>) -> Credential {
    request
        .extensions()
        .get::<Credential>()
        .cloned()
        .unwrap_or_default()
}

#[tonic::async_trait]
impl WorkerService for Workers {
    async fn poll_activity_task(
        &self,
        request: Request<proto::PollActivityTaskRequest>,
    ) -> Result<Response<proto::PollActivityTaskResponse>, Status> {
        // The auth layer puts the caller's role here; without one (no such
        // layer) nothing is scoped.
        let role = request.extensions().get::<Role>().cloned();
        let credential = credential(&request);
        let r = request.into_inner();
        if r.activity_names.is_empty() {
            return Err(Status::invalid_argument(
                "activity_names is empty; list the activities this worker serves",
            ));
        }
        if let Some(role) = &role
            && let Some(name) = r.activity_names.iter().find(|n| !role.serves(n))
        {
            return Err(Status::permission_denied(format!(
                "this worker token serves only {}, not activity {name:?}; poll for those, or ask for a token that names {name:?}",
                role.scope().unwrap_or_default()
            )));
        }
        let worker_id = if r.worker_id.is_empty() {
            "worker"
        } else {
            &r.worker_id
        };
        let key = self.key().await?;
        let poller = Poller {
            id: worker_id,
            key: &key,
            credential: &credential,
        };
        let wait = match r.wait_ms {
            0 => DEFAULT_WAIT,
            ms => Duration::from_millis(ms).min(MAX_WAIT),
        };
        let give_up = tokio::time::Instant::now() + wait;
        let batch = r.max_tasks > 0;
        let limit = r.max_tasks.clamp(1, MAX_TASKS_PER_POLL);
        let host = &self.host;
        let handoff = host.driver.handoff();
        loop {
            let woken = host.wakeups.pollers.notified();
            tokio::pin!(woken);
            // Registered before the store is asked, so tasks made in between wake it.
            woken.as_mut().enable();
            let now = self.now();
            let claimed = host
                .store
                .claim_activities(
                    worker_id,
                    &r.activity_names,
                    now,
                    self.default_lease_ms(),
                    limit,
                )
                .await
                .map_err(|e| status(e.into()))?;
            if !claimed.is_empty() {
                let answer = self.answer(claimed, batch, &poller).await?;
                if answer.get_ref().task.is_some() || !answer.get_ref().tasks.is_empty() {
                    return Ok(answer);
                }
                // Every task claimed had run out of time: look again.
                continue;
            }
            // Nothing to claim: wait in line, so that an activation that
            // schedules a task this worker serves hands it over in its commit.
            // (A task scheduled since the claim, before this, wakes the poll.)
            let mut place = handoff.wait(worker_id, &r.activity_names, limit);
            let next = host
                .store
                .next_activity_at(&r.activity_names)
                .await
                .ok()
                .flatten()
                .filter(|&at| at > now);
            let due = async {
                match next {
                    Some(at) => host.clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            enum Woke {
                Handed(Vec<ActivityTask>),
                Look,
                GiveUp,
            }
            let woke = tokio::select! {
                handed = place.handed() => Woke::Handed(handed),
                () = woken => Woke::Look,
                () = due => Woke::Look,
                // Tasks other hosts made: look again now and then.
                () = tokio::time::sleep(host.config.poll_interval) => Woke::Look,
                () = tokio::time::sleep_until(give_up) => Woke::GiveUp,
            };
            let gave_up = matches!(woke, Woke::GiveUp);
            let handed = match woke {
                // Taken out of line: the tasks, or none when their commit failed.
                Woke::Handed(handed) => handed,
                Woke::Look | Woke::GiveUp => handoff.leave(&mut place).await,
            };
            if !handed.is_empty() || gave_up {
                return self.answer(handed, batch, &poller).await;
            }
        }
    }

    async fn complete_activity_task(
        &self,
        request: Request<proto::CompleteActivityTaskRequest>,
    ) -> Result<Response<proto::CompleteActivityTaskResponse>, Status> {
        let role = request.extensions().get::<Role>().cloned();
        let token = self
            .attempt_of(&request, &request.get_ref().task_token)
            .await?;
        let r = request.into_inner();
        self.check_scope(role.as_ref(), &token).await?;
        let outcome = match self.payload("output_json", &r.output_json, || {
            format!(
                "the output of activity {} of run {}",
                token.seq, token.run_id
            )
        }) {
            Ok(output) => AttemptOutcome::Completed { output },
            Err(PayloadError::Invalid(message)) => return Err(Status::invalid_argument(message)),
            Err(PayloadError::TooLarge(message)) => {
                // Failed for good, so the workflow learns why instead of waiting.
                self.finish(
                    &token,
                    AttemptOutcome::Failed {
                        failure: Failure::new("PayloadTooLarge", message.clone()),
                    },
                )
                .await?;
                return Err(Status::invalid_argument(format!(
                    "{message}; the activity failed with PayloadTooLarge"
                )));
            }
        };
        self.finish(&token, outcome).await?;
        Ok(Response::new(proto::CompleteActivityTaskResponse {}))
    }

    async fn fail_activity_task(
        &self,
        request: Request<proto::FailActivityTaskRequest>,
    ) -> Result<Response<proto::FailActivityTaskResponse>, Status> {
        let role = request.extensions().get::<Role>().cloned();
        let token = self
            .attempt_of(&request, &request.get_ref().task_token)
            .await?;
        let r = request.into_inner();
        let Some(task) = self
            .host
            .store
            .current_attempt(&token.run_id, token.seq, token.lease_token)
            .await
            .map_err(|e| status(e.into()))?
        else {
            return Err(token.stale("it finished, timed out, was cancelled or was taken over"));
        };
        scope_check(role.as_ref(), &token, &task.name)?;
        let error_type = if r.error_type.is_empty() {
            "ActivityFailed".to_owned()
        } else {
            r.error_type
        };
        let mut error = if r.non_retryable {
            ActivityError::non_retryable(error_type, r.message)
        } else {
            ActivityError::retryable(error_type, r.message)
        };
        if let Some(ms) = r.retry_after_ms {
            error = error.retry_after(Duration::from_millis(ms));
        }
        let policy = task.options.retry.clone().unwrap_or_default();
        let outcome = outcome_of_failure(&policy, &task, error, self.now());
        let will_retry = matches!(outcome, AttemptOutcome::Retry { .. });
        self.finish(&token, outcome).await?;
        Ok(Response::new(proto::FailActivityTaskResponse {
            will_retry,
        }))
    }

    async fn heartbeat_activity_task(
        &self,
        request: Request<proto::HeartbeatActivityTaskRequest>,
    ) -> Result<Response<proto::HeartbeatActivityTaskResponse>, Status> {
        let role = request.extensions().get::<Role>().cloned();
        let token = self
            .attempt_of(&request, &request.get_ref().task_token)
            .await?;
        let r = request.into_inner();
        self.check_scope(role.as_ref(), &token).await?;
        let details = match r.details_json.as_deref() {
            None => None,
            Some(text) => Some(
                self.payload("details_json", text, || {
                    format!(
                        "the heartbeat details of activity {} of run {}",
                        token.seq, token.run_id
                    )
                })
                .map_err(|e| match e {
                    PayloadError::Invalid(m) | PayloadError::TooLarge(m) => {
                        Status::invalid_argument(m)
                    }
                })?,
            ),
        };
        let heartbeat = Heartbeat {
            run_id: token.run_id.clone(),
            seq: token.seq,
            lease_token: token.lease_token,
            details,
            now_ms: self.now(),
        };
        match self.host.store.heartbeat(heartbeat).await {
            Ok(()) => Ok(Response::new(proto::HeartbeatActivityTaskResponse {
                cancel_requested: false,
                reason: String::new(),
            })),
            Err(StoreError::Conflict { reason, .. }) => {
                Ok(Response::new(proto::HeartbeatActivityTaskResponse {
                    cancel_requested: true,
                    reason,
                }))
            }
            Err(e) => Err(status(e.into())),
        }
    }
}

/// A scoped worker token's refusal of a task of an activity it does not name.
fn scope_check(role: Option<&Role>, token: &TaskToken, name: &str) -> Result<(), Status> {
    match role {
        Some(role) if !role.serves(name) => Err(Status::permission_denied(format!(
            "this worker token serves only {}; activity {} of run {} is {name:?}",
            role.scope().unwrap_or_default(),
            token.seq,
            token.run_id,
        ))),
        _ => Ok(()),
    }
}
