//! Auditing a run without the database: its complete record ([`Export`]),
//! the proof that the record was not altered ([`verify`]), and the replay of
//! the record against the module it names ([`replay_offline`]).
//!
//! An export is one JSON document: the run (ids, status, result), the module
//! it is pinned to (sha256, name, version), every event exactly as stored —
//! number, time, kind, fields and chain hash — and the count and head hash of
//! the chain. [`verify`] works on the raw text, so that a field added,
//! removed or edited anywhere is caught even where the model would ignore or
//! drop it; it names the first event out of place, and then checks that the
//! export's `run` and `module` sections say what the events say
//! ([`ChainedRun`]: the events are the record). Verifying proves the
//! record is internally consistent; comparing its head hash with one kept
//! elsewhere (the host's, or one published when the run closed) proves no
//! event was cut off the end. A host with a signing key ([`Signer`]) signs
//! the head of what it exports; [`check_signature`] proves, with its public
//! key alone, that a file is the record that host exported.
//!
//! ```no_run
//! # fn f(export_json: &str, module: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! let verified = weft::audit::verify(export_json)?;
//! println!("{} events, head {}", verified.events, verified.head);
//! let rt = tokio::runtime::Runtime::new()?;
//! let replayed = rt.block_on(weft::audit::replay_offline(module, export_json))?;
//! println!("{}", replayed.verdict_text());
//! # Ok(()) }
//! ```

mod chained;
mod signing;

pub(crate) use chained::reconciled;
pub use chained::{ChainedRun, Closed, closed_by};
pub use signing::{HeadSignature, Signer, check_signature, sealed_message, signed_message};

use crate::store::Seal;

use crate::model::{Event, EventHash, Failure, History, RecordedEvent, Sha256Hex};
use crate::wasm::{EngineConfig, WasmEngine};
use crate::workflow::{ReplayError, ReplayVerdict, replay_history};
use serde::{Deserialize, Serialize};
use serde_json::Value;

impl crate::Host {
    /// A run's complete record, from this host's store. What it says of
    /// the run (ids, type, module, status, output, failure) is read from
    /// the events, not from the `runs` row; the head is signed only if the
    /// chain verifies.
    pub async fn export(&self, run_id: &crate::model::RunId) -> Result<Export, crate::HostError> {
        let row = self.store().run(run_id).await?;
        let history = self.history(run_id).await?;
        let chained = ChainedRun::of(history.events().iter().map(|e| &e.event)).ok_or_else(|| {
            crate::store::StoreError::Corrupt(format!(
                "run {run_id}'s history does not begin with workflow_started; check it with `weft verify`"
            ))
        })?;
        if chained.module_sha256 != row.module_sha256 {
            tracing::error!(%run_id, "run {run_id}'s row names module {} but its history is on {}; the history wins (was the runs table edited?)", row.module_sha256, chained.module_sha256);
        }
        let module = self.module_record(&chained.module_sha256).await.ok();
        let chain = history.verify();
        let mut export = Export::new(
            ExportedRun::of(run_id.as_str(), chained.clone(), row.status),
            ExportedModule {
                sha256: chained.module_sha256,
                name: module.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
                version: module.map(|m| m.version).unwrap_or_default(),
            },
            history.into_events(),
            self.clock().now_ms(),
        );
        export.signature = match chain {
            Ok(()) => self.sign_head(&export.run.run_id, export.event_count, &export.head),
            Err(e) => {
                tracing::error!(%run_id, error = %e, "run {run_id}'s history does not verify: its export is not signed");
                None
            }
        };
        export.seal = self.store().seal(run_id).await?;
        Ok(export)
    }

    /// Seals up to `limit` closed runs that have no seal yet, when this host
    /// has a signing key: re-reads each history from the store, checks its
    /// chain and that its last event closes the run, signs its head and
    /// keeps the seal. Returns how many it sealed. A run whose history does
    /// not verify, or cannot be read, is left unsealed, and said so in the
    /// log; the others are sealed all the same.
    pub async fn seal_closed_runs(&self, limit: u32) -> Result<usize, crate::HostError> {
        self.seal_closed_runs_skipping(limit, &mut Default::default())
            .await
    }

    /// [`Self::seal_closed_runs`], passing over the runs in `unsealable`
    /// and adding to it those it finds it cannot seal: the seal loop keeps
    /// it, so that each is logged and counted once, and a batch full of
    /// them does not keep the runs behind them from being sealed.
    async fn seal_closed_runs_skipping(
        &self,
        limit: u32,
        unsealable: &mut std::collections::HashSet<crate::model::RunId>,
    ) -> Result<usize, crate::HostError> {
        let Some(signer) = self.config().signer.clone() else {
            return Ok(0);
        };
        let mut sealed = 0;
        let skipped = u32::try_from(unsealable.len()).unwrap_or(u32::MAX);
        let candidates = self
            .store()
            .unsealed_runs(limit.saturating_add(skipped))
            .await?;
        for run_id in candidates {
            if unsealable.contains(&run_id) {
                continue;
            }
            let history = match self.history(&run_id).await {
                Ok(history) => history,
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => {
                    tracing::error!(run_id = %run_id, error = %e, "a closed run's history cannot be read: it is not sealed");
                    self.metrics().run_unsealable();
                    unsealable.insert(run_id);
                    continue;
                }
            };
            let closed = history
                .events()
                .last()
                .is_some_and(|e| e.event.is_terminal());
            if let Err(e) = history.verify() {
                tracing::error!(run_id = %run_id, error = %e, "a closed run's history does not verify: it is not sealed");
                self.metrics().run_unsealable();
                unsealable.insert(run_id);
                continue;
            }
            if !closed {
                tracing::error!(run_id = %run_id, "run {run_id} is closed in the runs table but its history does not end in a closing event: it is not sealed");
                self.metrics().run_unsealable();
                unsealable.insert(run_id);
                continue;
            }
            let seal = signer.seal(
                run_id.as_str(),
                history.len() as u64,
                &history.last_hash(),
                self.clock().now_ms(),
            );
            if self.store().put_seal(&run_id, &seal).await? {
                self.metrics().run_sealed();
                sealed += 1;
            }
        }
        Ok(sealed)
    }

    /// The head's signature, when this host has a signing key ([`crate::HostConfig::signer`]).
    pub fn sign_head(
        &self,
        run_id: &str,
        event_count: u64,
        head: &EventHash,
    ) -> Option<HeadSignature> {
        self.config()
            .signer
            .as_ref()
            .map(|s| s.sign_head(run_id, event_count, head))
    }
}

/// How many closed runs the seal loop seals at a time.
const SEAL_BATCH: u32 = 100;

/// Seals closed runs while the host runs ([`crate::Host::seal_closed_runs`]):
/// woken when a run closes here, and every poll interval for runs that
/// closed on other hosts.
pub(crate) async fn seal_loop(host: crate::Host, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let poll = host.config().poll_interval;
    let mut unsealable = std::collections::HashSet::new();
    while !*shutdown.borrow() {
        let woken = host.wakeups().sealer.notified();
        let busy = match host
            .seal_closed_runs_skipping(SEAL_BATCH, &mut unsealable)
            .await
        {
            Ok(n) => n == SEAL_BATCH as usize,
            Err(e) => {
                tracing::warn!(error = %e, "sealing closed runs failed; trying again later");
                false
            }
        };
        if busy {
            continue;
        }
        tokio::select! {
            () = woken => {}
            () = tokio::time::sleep(poll) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The `format` of an export this version writes and reads.
pub const FORMAT: &str = "weft-history/1";

/// A run's complete, self-checking record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Export {
    /// [`FORMAT`].
    pub format: String,
    pub exported_at_ms: u64,
    pub run: ExportedRun,
    /// The module the run is on (the one that replays its whole history).
    pub module: ExportedModule,
    pub event_count: u64,
    /// The hash of the last event: the chain's head.
    pub head: EventHash,
    /// The exporting host's signature of the head, when it has a signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<HeadSignature>,
    /// The run's seal: its head as a host signed it when the run closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<Seal>,
    pub events: Vec<ExportedEvent>,
}

/// One event as stored: its number, time, kind, fields (the payload the
/// hash covers) and chain hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedEvent {
    pub seq: u64,
    pub recorded_at_ms: u64,
    pub kind: String,
    pub payload: Value,
    pub hash: EventHash,
}

impl From<&RecordedEvent> for ExportedEvent {
    fn from(e: &RecordedEvent) -> Self {
        Self {
            seq: e.seq,
            recorded_at_ms: e.recorded_at_ms,
            kind: e.event.kind().to_owned(),
            payload: serde_json::from_str(&e.event.payload_json())
                .expect("an event's payload is JSON"),
            hash: e.hash,
        }
    }
}

/// The run an export records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedRun {
    pub run_id: String,
    pub workflow_id: String,
    pub workflow_type: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

impl ExportedRun {
    /// The run section of an export of `chained`'s history: all of it from
    /// the events but the run id, and, while the history is open, whether
    /// the run is parked (`stuck`), which only the runs table knows.
    pub fn of(run_id: &str, chained: ChainedRun, row_status: crate::RunStatus) -> Self {
        let (status, output, failure) = match chained.closed {
            Some(c) => (c.status, c.output, c.failure),
            None if row_status.is_open() => (row_status, None, None),
            None => (crate::RunStatus::Running, None, None),
        };
        Self {
            run_id: run_id.to_owned(),
            workflow_id: chained.workflow_id,
            workflow_type: chained.workflow_type,
            status: status.as_str().into(),
            output,
            failure,
        }
    }
}

/// The module an export's run is on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedModule {
    pub sha256: Sha256Hex,
    pub name: String,
    pub version: String,
}

impl Export {
    /// An export of `events`, with its count and head.
    pub fn new(
        run: ExportedRun,
        module: ExportedModule,
        events: Vec<RecordedEvent>,
        exported_at_ms: u64,
    ) -> Self {
        let head = events.last().map(|e| e.hash).unwrap_or(EventHash::GENESIS);
        Self {
            format: FORMAT.into(),
            exported_at_ms,
            run,
            module,
            event_count: events.len() as u64,
            head,
            signature: None,
            seal: None,
            events: events.iter().map(ExportedEvent::from).collect(),
        }
    }

    /// The history the export records, as the host's model reads it.
    pub fn history(&self) -> Result<History, AuditError> {
        let mut events = Vec::with_capacity(self.events.len());
        for e in &self.events {
            let event = Event::from_parts(&e.kind, &e.payload.to_string()).map_err(|err| {
                AuditError::Altered {
                    seq: e.seq,
                    kind: e.kind.clone(),
                    how: format!("it is not an event Weft writes ({err})"),
                }
            })?;
            events.push(RecordedEvent {
                seq: e.seq,
                recorded_at_ms: e.recorded_at_ms,
                event,
                hash: e.hash,
            });
        }
        Ok(History::from_recorded(events))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("exports serialise")
    }
}

/// Where a head hash kept outside the host (in a report, a ticket, a
/// transparency log) stands in a verified export: the number of the event
/// whose hash it is. Since each hash covers every event before it, the export
/// then proves that the history up to that event is the one the head was
/// taken from, however the rest was re-chained.
pub fn anchored(export: &Export, head: &EventHash) -> Result<u64, AuditError> {
    export
        .events
        .iter()
        .find(|e| &e.hash == head)
        .map(|e| e.seq)
        .ok_or_else(|| AuditError::Unanchored {
            head: head.to_hex(),
        })
}

/// What a successful [`verify`] established.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verified {
    pub run_id: String,
    pub workflow_id: String,
    pub module_sha256: Sha256Hex,
    pub events: u64,
    /// The chain's head: compare it with one kept elsewhere to prove nothing was cut off.
    pub head: String,
}

/// Why an export does not verify: the first thing out of place, and what it means.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuditError {
    #[error("the export cannot be read: {0}; give the JSON `weft export` wrote")]
    Malformed(String),
    #[error("event {seq} ({kind}) was altered: {how}; the record is not the one the host wrote")]
    Altered { seq: u64, kind: String, how: String },
    #[error("event {expected} is missing: event {found} stands in its place; events were deleted")]
    Missing { expected: u64, found: u64 },
    #[error(
        "event {found} appears where event {expected} should: events were reordered or duplicated"
    )]
    Reordered { expected: u64, found: u64 },
    #[error(
        "the export says it holds {stated} events but holds {held}: events were removed or added"
    )]
    Count { stated: u64, held: u64 },
    #[error(
        "the head hash {stated} is not the last event's hash {computed}: the end of the history was cut off or the head was edited"
    )]
    Head { stated: String, computed: String },
    #[error(
        "the module's sha256 is {given}, but the run is on module {recorded} ({named}); replay with that one: weft modules get {named} -o FILE"
    )]
    WrongModule {
        recorded: Sha256Hex,
        given: Sha256Hex,
        /// The run's module as `NAME VERSION`, as the export names it.
        named: String,
    },
    #[error(
        "no event has the hash {head}: the history up to that head was altered and re-chained, or the head belongs to another run"
    )]
    Unanchored { head: String },
    #[error(
        "the export is not signed: the host that wrote it has no signing key (start it with --signing-key FILE), or the signature was removed"
    )]
    Unsigned,
    #[error(
        "the export is signed by key {found}, not by {expected}: it comes from another host, or was re-signed"
    )]
    WrongSigner { expected: String, found: String },
    #[error(
        "the head's signature does not match the export: the run id, event count or head was altered after the host signed it"
    )]
    BadSignature,
    #[error("{0:?} is not a public key: give the 64 hex digits `weft keygen` printed")]
    BadKey(String),
    #[error(
        "the run is {status} but the export carries no seal: a host with a signing key seals a closed run within seconds, so export it again; if it still has none, the seal was removed from the database"
    )]
    Unsealed { status: String },
    #[error(
        "the history is not the one the host sealed when the run closed: {how}; it was altered in the database after the run closed"
    )]
    SealBroken { how: String },
    #[error(
        "the export's {field} is {stated}, but its events say {chained}: the export was edited after it was written; trust the events, or ask the host for a fresh export"
    )]
    RunDiffers {
        /// The field of the export, such as `run.output`.
        field: String,
        stated: String,
        chained: String,
    },
    #[error(
        "the replay computed {computed}, but the history records {recorded}: the record is not what this module did"
    )]
    OutcomeDiffers { computed: String, recorded: String },
    #[error("the module cannot be loaded: {0}")]
    Module(String),
    #[error("the history cannot be replayed: {0}")]
    Replay(String),
}

fn malformed(what: impl std::fmt::Display) -> AuditError {
    AuditError::Malformed(what.to_string())
}

/// Checks an export's text: every event where it belongs, each exactly as
/// written (nothing added, dropped or changed), each hash chained to the one
/// before, the count and the head. Returns the parsed export with what was
/// established, or the first thing out of place.
pub fn verify_export(text: &str) -> Result<(Export, Verified), AuditError> {
    let raw: Value = serde_json::from_str(text).map_err(malformed)?;
    let format = raw.get("format").and_then(Value::as_str).unwrap_or("");
    if format != FORMAT {
        return Err(malformed(format!(
            "its format is {format:?}, not {FORMAT:?}"
        )));
    }
    let raw_events = raw
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("it has no `events` list"))?;
    check_fields(&raw, TOP_FIELDS, "")?;
    if let Some(run) = raw.get("run") {
        check_fields(run, RUN_FIELDS, "run.")?;
    }
    let mut prev = EventHash::GENESIS;
    let mut parsed = Vec::with_capacity(raw_events.len());
    for (i, raw_event) in raw_events.iter().enumerate() {
        let expected = i as u64 + 1;
        let seq = raw_event.get("seq").and_then(Value::as_u64);
        let kind = raw_event
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        match seq {
            Some(seq) if seq > expected => {
                // Further on: moved. Nowhere: deleted.
                let later = raw_events[i..]
                    .iter()
                    .any(|e| e.get("seq").and_then(Value::as_u64) == Some(expected));
                return Err(if later {
                    AuditError::Reordered {
                        expected,
                        found: seq,
                    }
                } else {
                    AuditError::Missing {
                        expected,
                        found: seq,
                    }
                });
            }
            Some(seq) if seq < expected => {
                return Err(AuditError::Reordered {
                    expected,
                    found: seq,
                });
            }
            Some(_) => {}
            None => {
                return Err(AuditError::Altered {
                    seq: expected,
                    kind,
                    how: "it has no event number".into(),
                });
            }
        }
        let altered = |how: String| AuditError::Altered {
            seq: expected,
            kind: kind.clone(),
            how,
        };
        let stored: ExportedEvent = serde_json::from_value(raw_event.clone())
            .map_err(|e| altered(format!("it is not an event as Weft exports them ({e})")))?;
        if serde_json::to_value(&stored).ok().as_ref() != Some(raw_event) {
            return Err(altered("it carries fields that events do not have".into()));
        }
        let event = Event::from_parts(&stored.kind, &stored.payload.to_string())
            .map_err(|e| altered(format!("it is not an event Weft writes ({e})")))?;
        let payload = event.payload_json();
        if serde_json::from_str::<Value>(&payload).ok().as_ref() != Some(&stored.payload) {
            return Err(altered(
                "its payload carries fields or values that are not the event's own".into(),
            ));
        }
        let hash = EventHash::chain(
            &prev,
            stored.seq,
            event.kind(),
            stored.recorded_at_ms,
            &payload,
        );
        if hash != stored.hash {
            return Err(altered(if i == 0 {
                "its content does not match its hash".into()
            } else {
                format!(
                    "its content does not match its hash chained to event {}",
                    expected - 1
                )
            }));
        }
        prev = hash;
        parsed.push(event);
    }
    let export: Export = serde_json::from_value(raw).map_err(malformed)?;
    let held = export.events.len() as u64;
    if export.event_count != held {
        return Err(AuditError::Count {
            stated: export.event_count,
            held,
        });
    }
    if export.head != prev {
        return Err(AuditError::Head {
            stated: export.head.to_hex(),
            computed: prev.to_hex(),
        });
    }
    check_run(&export, &parsed)?;
    let verified = Verified {
        run_id: export.run.run_id.clone(),
        workflow_id: export.run.workflow_id.clone(),
        module_sha256: export.module.sha256.clone(),
        events: held,
        head: prev.to_hex(),
    };
    Ok((export, verified))
}

/// The fields an export has at its top level, and in its `run`.
const TOP_FIELDS: &[&str] = &[
    "format",
    "exported_at_ms",
    "run",
    "module",
    "event_count",
    "head",
    "signature",
    "seal",
    "events",
];
const RUN_FIELDS: &[&str] = &[
    "run_id",
    "workflow_id",
    "workflow_type",
    "status",
    "output",
    "failure",
];

/// A field a reader would be shown that no export has is refused, not
/// ignored.
fn check_fields(value: &Value, known: &[&str], prefix: &str) -> Result<(), AuditError> {
    let Some(map) = value.as_object() else {
        return Err(malformed(format!("`{prefix}` is not an object")));
    };
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(AuditError::RunDiffers {
            field: format!("{prefix}{k}"),
            stated: map[k].to_string(),
            chained: "nothing: exports have no such field".into(),
        }),
        None => Ok(()),
    }
}

/// The export's `run` and `module` sections against what its events say:
/// the first field that differs.
fn check_run(export: &Export, events: &[Event]) -> Result<(), AuditError> {
    let Some(chained) = ChainedRun::of(events) else {
        return Err(AuditError::Altered {
            seq: 1,
            kind: export
                .events
                .first()
                .map(|e| e.kind.clone())
                .unwrap_or_default(),
            how: "a history begins with workflow_started".into(),
        });
    };
    let differs = |field: &str, stated: String, chained: String| {
        Err(AuditError::RunDiffers {
            field: field.into(),
            stated,
            chained,
        })
    };
    let run = &export.run;
    if run.workflow_id != chained.workflow_id {
        return differs(
            "run.workflow_id",
            format!("{:?}", run.workflow_id),
            format!("{:?}", chained.workflow_id),
        );
    }
    if run.workflow_type != chained.workflow_type {
        return differs(
            "run.workflow_type",
            format!("{:?}", run.workflow_type),
            format!("{:?}", chained.workflow_type),
        );
    }
    if export.module.sha256 != chained.module_sha256 {
        return differs(
            "module.sha256",
            export.module.sha256.to_string(),
            chained.module_sha256.to_string(),
        );
    }
    let (status, output, failure) = match &chained.closed {
        Some(c) => (c.status.as_str(), c.output.clone(), c.failure.clone()),
        None => ("running", None, None),
    };
    let claims_open = matches!(run.status.as_str(), "running" | "stuck");
    let status_agrees = match &chained.closed {
        Some(_) => run.status == status,
        None => claims_open,
    };
    if !status_agrees {
        return differs(
            "run.status",
            format!("{:?}", run.status),
            match chained.closed {
                Some(_) => format!("{status:?} (event {} closes the run)", export.events.len()),
                None => "running (no event closes the run)".into(),
            },
        );
    }
    let shown = |v: &Option<Value>| {
        v.as_ref()
            .filter(|v| !v.is_null())
            .map_or_else(|| "none".into(), Value::to_string)
    };
    if shown(&run.output) != shown(&output) {
        return differs("run.output", shown(&run.output), shown(&output));
    }
    if run.failure != failure {
        let shown = |f: &Option<Failure>| {
            f.as_ref()
                .map_or_else(|| "none".into(), |f| format!("{f:?}"))
        };
        return differs("run.failure", shown(&run.failure), shown(&failure));
    }
    Ok(())
}

/// [`verify_export`], keeping only what it established.
pub fn verify(text: &str) -> Result<Verified, AuditError> {
    verify_export(text).map(|(_, verified)| verified)
}

/// An offline replay's outcome: the verified record and the verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct OfflineReplay {
    pub verified: Verified,
    pub verdict: ReplayVerdict,
    /// The output the replay computed (the guest's own return value), when
    /// it completed; it is the one the history's closing event records.
    pub output: Option<Value>,
}

impl OfflineReplay {
    /// "replays identically …" or the divergence, for people.
    pub fn verdict_text(&self) -> String {
        match &self.verdict {
            ReplayVerdict::Identical { status, events } => format!(
                "run {} replays identically: {events} events, the workflow ends {}{}",
                self.verified.run_id,
                status_word(status),
                self.output
                    .as_ref()
                    .map(|o| format!(" with {o}"))
                    .unwrap_or_default()
            ),
            ReplayVerdict::Diverged(d) => {
                format!("run {} does not replay: {d}", self.verified.run_id)
            }
        }
    }
}

fn status_word(status: &crate::model::GuestStatus) -> &'static str {
    use crate::model::GuestStatus;
    match status {
        GuestStatus::Pending => "still running (it waits for more)",
        GuestStatus::Completed(_) => "completed",
        GuestStatus::Failed(_) => "failed",
        GuestStatus::Cancelled(_) => "cancelled",
        GuestStatus::ContinuedAsNew(_) => "continued as new",
    }
}

/// Verifies an export and replays it against `module` (its bytes), with no
/// database and no network: the module's sha256 must be the one the export
/// names. The same check `weft replay --history FILE --module FILE` runs.
pub async fn replay_offline(module: &[u8], export_json: &str) -> Result<OfflineReplay, AuditError> {
    let (export, verified) = verify_export(export_json)?;
    let given = Sha256Hex::of(module);
    let named = format!("{} {}", export.module.name, export.module.version);
    if given != export.module.sha256 {
        return Err(AuditError::WrongModule {
            recorded: export.module.sha256,
            given,
            named,
        });
    }
    let engine = WasmEngine::new(EngineConfig {
        pooled_instances: 0,
        ..EngineConfig::default()
    })
    .map_err(|e| AuditError::Module(format!("{e:#}")))?;
    let loaded = engine
        .load(module)
        .map_err(|e| AuditError::Module(e.to_string()))?;
    let history = export.history()?;
    let verdict = replay_history(&engine, &loaded, &history)
        .await
        .map_err(|e| match e {
            ReplayError::WrongModule { recorded, given } => AuditError::WrongModule {
                recorded,
                given,
                named,
            },
            e => AuditError::Replay(e.to_string()),
        })?;
    let output = match &verdict {
        ReplayVerdict::Identical { status, .. } => {
            chained::check_outcome(status, history.events().last())?;
            match status {
                crate::model::GuestStatus::Completed(output) => Some(output.clone()),
                _ => None,
            }
        }
        ReplayVerdict::Diverged(_) => None,
    };
    Ok(OfflineReplay {
        verified,
        verdict,
        output,
    })
}
