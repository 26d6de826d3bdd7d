//! The client's side of versions: checked deploys, defaults, the
//! compatibility check, upgrades, resumes, module downloads and garbage
//! collection (see [`crate::versions`] for what the host does).

use super::{Client, ClientError, ModuleView, RunView, parse_json, run_ref};
use crate::api::proto;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::pin::Pin;
use std::time::Duration;

/// A deployed module: by sha256, or by name and version.
#[derive(Clone, Debug, PartialEq)]
pub enum ModuleSpec {
    Sha256(String),
    Version { name: String, version: String },
}

impl ModuleSpec {
    pub(super) fn to_proto(&self) -> proto::ModuleRef {
        match self {
            ModuleSpec::Sha256(sha256) => proto::ModuleRef {
                sha256: sha256.clone(),
                ..Default::default()
            },
            ModuleSpec::Version { name, version } => proto::ModuleRef {
                name: name.clone(),
                version: version.clone(),
                ..Default::default()
            },
        }
    }
}

/// What to deploy and how it treats the name's default.
#[derive(Clone, Debug, Default)]
pub struct DeploySpec {
    pub name: String,
    /// `None`: the first 12 hex digits of the sha256.
    pub version: Option<String>,
    pub wasm: Vec<u8>,
    /// Store it without making it the default.
    pub keep_default: bool,
    /// Make it the default only if no open run of the name would diverge on it.
    pub check: bool,
}

/// Where a history and a module part ways.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DivergenceView {
    pub event_seq: u64,
    /// The recorded event (`None`: the module issues a command the history lacks).
    pub recorded: Option<Value>,
    /// What the module issues now (`None`: nothing).
    pub issued: Option<Value>,
    /// The guest function that issued it (file:line with debug info).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// An event in a few words: its kind and what it names (`activity_scheduled
/// reserve`), else its kind and its fields.
fn brief(event: &Option<Value>) -> String {
    let Some(Value::Object(fields)) = event else {
        return event.as_ref().map_or("nothing".into(), Value::to_string);
    };
    let kind = fields
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("event");
    let named = ["name", "change_id", "workflow_type"]
        .iter()
        .find_map(|k| fields.get(*k).and_then(Value::as_str));
    match named {
        Some(name) => format!("{kind} {name}"),
        None => {
            let mut rest = fields.clone();
            rest.remove("kind");
            format!("{kind} {}", Value::Object(rest))
        }
    }
}

impl std::fmt::Display for DivergenceView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = brief;
        write!(
            f,
            "event {}: the history records {}, the module issues {}",
            self.event_seq,
            show(&self.recorded),
            show(&self.issued)
        )?;
        match &self.location {
            Some(location) => write!(f, " in {location}"),
            None => Ok(()),
        }
    }
}

/// One run of a compatibility check.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunCheckView {
    pub run_id: String,
    pub workflow_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workflow_type: String,
    pub open: bool,
    pub module_sha256: String,
    /// `identical`, `diverged` or `failed`.
    pub verdict: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub events: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence: Option<DivergenceView>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RunCheckView {
    pub fn identical(&self) -> bool {
        self.verdict == "identical"
    }

    /// An open run the module would not replay.
    pub fn blocks(&self) -> bool {
        self.open && !self.identical()
    }
}

impl From<proto::RunCheck> for RunCheckView {
    fn from(c: proto::RunCheck) -> Self {
        let json = |t: String| Some(t).filter(|t| !t.is_empty()).map(|t| parse_json(&t));
        Self {
            run_id: c.run_id,
            workflow_id: c.workflow_id,
            workflow_type: c.workflow_type,
            open: c.open,
            module_sha256: c.module_sha256,
            verdict: c.verdict,
            events: c.events,
            divergence: c.divergence.map(|d| DivergenceView {
                event_seq: d.event_seq,
                recorded: json(d.recorded_json),
                issued: json(d.issued_json),
                location: Some(d.location).filter(|l| !l.is_empty()),
            }),
            message: c.message,
        }
    }
}

/// What a deploy or a default change did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeployedView {
    pub module: ModuleView,
    pub is_default: bool,
    /// With a check: the open runs that would diverge (the default was then kept).
    pub diverging: Vec<RunCheckView>,
}

impl From<proto::DeployResponse> for DeployedView {
    fn from(d: proto::DeployResponse) -> Self {
        Self {
            module: d.module.map(Into::into).unwrap_or_default(),
            is_default: d.is_default,
            diverging: d.diverging.into_iter().map(Into::into).collect(),
        }
    }
}

/// One run of an upgrade.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunUpgradeView {
    pub run_id: String,
    pub workflow_id: String,
    pub from_sha256: String,
    /// `upgraded`, `would_upgrade`, `stays` or `skipped`.
    pub result: String,
    /// For `stays`: why (the divergence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<RunCheckView>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl From<proto::RunUpgrade> for RunUpgradeView {
    fn from(u: proto::RunUpgrade) -> Self {
        Self {
            run_id: u.run_id,
            workflow_id: u.workflow_id,
            from_sha256: u.from_sha256,
            result: u.result,
            check: u.check.map(Into::into),
            message: u.message,
        }
    }
}

/// What garbage collection removed (or would).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GarbageView {
    pub runs: u64,
    pub events: u64,
    pub modules: Vec<ModuleView>,
}

/// What a reset did: the new run, what it kept and what it received again.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResetView {
    pub run_id: String,
    pub workflow_id: String,
    pub module_sha256: String,
    pub kept_events: u64,
    /// Signals the old run received after the kept events, queued again.
    pub signals: u32,
    /// Updates the old run accepted after the kept events, applied again.
    pub updates: u32,
    /// The old run was open and was terminated.
    pub terminated_old: bool,
}

/// Results streamed by the host, one per run, after their number.
pub struct RunResults<T> {
    /// How many results follow.
    pub total: u32,
    rest: Pin<Box<dyn Stream<Item = Result<T, ClientError>> + Send>>,
}

impl<T> RunResults<T> {
    /// The next run's result; `None` after the last.
    pub async fn next(&mut self) -> Result<Option<T>, ClientError> {
        self.rest.next().await.transpose()
    }
}

/// A message of such a stream.
enum Part<T> {
    Total(u32),
    Item(T),
}

/// Reads a host's stream whose first message is a count and the rest results.
async fn run_results<M, T>(
    mut stream: tonic::Streaming<M>,
    split: fn(M) -> Option<Part<T>>,
) -> Result<RunResults<T>, ClientError>
where
    M: Send + 'static,
    T: Send + 'static,
{
    let Some(Part::Total(total)) = stream.message().await?.and_then(split) else {
        return Err(ClientError {
            code: tonic::Code::Internal,
            message: "the host's stream did not start with the number of runs".into(),
        });
    };
    let rest = futures::stream::unfold(stream, move |mut stream| async move {
        loop {
            match stream.message().await {
                Err(e) => return Some((Err(e.into()), stream)),
                Ok(None) => return None,
                Ok(Some(m)) => {
                    if let Some(Part::Item(item)) = split(m) {
                        return Some((Ok(item), stream));
                    }
                }
            }
        }
    });
    Ok(RunResults {
        total,
        rest: Box::pin(rest),
    })
}

impl Client {
    /// Deploys a component as `spec` says; see [`DeploySpec`].
    pub async fn deploy_module(&self, spec: DeploySpec) -> Result<DeployedView, ClientError> {
        let r = self
            .modules
            .clone()
            .deploy(proto::DeployRequest {
                name: spec.name,
                version: spec.version.unwrap_or_default(),
                wasm: spec.wasm,
                keep_default: spec.keep_default,
                check: spec.check,
            })
            .await?;
        Ok(r.into_inner().into())
    }

    /// A deployed module's record and bytes.
    pub async fn get_module(
        &self,
        module: &ModuleSpec,
    ) -> Result<(ModuleView, Vec<u8>), ClientError> {
        let r = self
            .modules
            .clone()
            .get_module(proto::GetModuleRequest {
                module: Some(module.to_proto()),
            })
            .await?
            .into_inner();
        Ok((r.module.map(Into::into).unwrap_or_default(), r.wasm))
    }

    /// Makes a deployed module the default of its name (with `check`, only if
    /// no open run would diverge on it).
    pub async fn set_default(
        &self,
        module: &ModuleSpec,
        check: bool,
    ) -> Result<DeployedView, ClientError> {
        let r = self
            .modules
            .clone()
            .set_default(proto::SetDefaultRequest {
                module: Some(module.to_proto()),
                check,
            })
            .await?;
        Ok(r.into_inner().into())
    }

    /// Replays the open runs of `name` (and `closed_sample` recently closed
    /// ones) against a candidate: its bytes, or a deployed module.
    pub async fn check(
        &self,
        name: &str,
        candidate: Result<Vec<u8>, ModuleSpec>,
        closed_sample: u32,
    ) -> Result<RunResults<RunCheckView>, ClientError> {
        use proto::check_request::Candidate;
        let candidate = match candidate {
            Ok(wasm) => Candidate::Wasm(wasm),
            Err(module) => Candidate::Module(module.to_proto()),
        };
        let stream = self
            .modules
            .clone()
            .check(proto::CheckRequest {
                name: name.into(),
                candidate: Some(candidate),
                closed_sample,
            })
            .await?
            .into_inner();
        run_results(stream, |m: proto::CheckEvent| match m.event? {
            proto::check_event::Event::Total(n) => Some(Part::Total(n)),
            proto::check_event::Event::Run(r) => Some(Part::Item(r.into())),
        })
        .await
    }

    /// Moves the open runs of `name` (or only `run_ids`) that replay
    /// identically on `to` there; the others stay. `dry_run` changes nothing.
    pub async fn upgrade(
        &self,
        name: &str,
        to: &ModuleSpec,
        run_ids: Vec<String>,
        dry_run: bool,
    ) -> Result<RunResults<RunUpgradeView>, ClientError> {
        let stream = self
            .modules
            .clone()
            .upgrade(proto::UpgradeRequest {
                name: name.into(),
                to: Some(to.to_proto()),
                run_ids,
                dry_run,
            })
            .await?
            .into_inner();
        run_results(stream, |m: proto::UpgradeEvent| match m.event? {
            proto::upgrade_event::Event::Total(n) => Some(Part::Total(n)),
            proto::upgrade_event::Event::Run(r) => Some(Part::Item(r.into())),
        })
        .await
    }

    /// Puts a stuck run back to work, on its module or on `module`.
    pub async fn resume(
        &self,
        workflow_id: &str,
        run_id: Option<&str>,
        module: Option<&ModuleSpec>,
    ) -> Result<RunView, ClientError> {
        let r = self
            .workflows
            .clone()
            .resume(proto::ResumeRequest {
                run: run_ref(workflow_id, run_id),
                module: module.map(ModuleSpec::to_proto),
            })
            .await?;
        Ok(r.into_inner().into())
    }

    /// Starts the workflow over from event `to_event` of a run (the end of an
    /// activation): see [`ResetView`].
    pub async fn reset(
        &self,
        workflow_id: &str,
        run_id: Option<&str>,
        to_event: u64,
        module: Option<&ModuleSpec>,
        reason: &str,
        reapply_exclude: &[String],
    ) -> Result<ResetView, ClientError> {
        let r = self
            .workflows
            .clone()
            .reset(proto::ResetRequest {
                run: run_ref(workflow_id, run_id),
                to_event,
                module: module.map(ModuleSpec::to_proto),
                reason: reason.into(),
                reapply_exclude: reapply_exclude.to_vec(),
            })
            .await?
            .into_inner();
        Ok(ResetView {
            run_id: r.run_id,
            workflow_id: r.workflow_id,
            module_sha256: r.module_sha256,
            kept_events: r.kept_events,
            signals: r.signals,
            updates: r.updates,
            terminated_old: r.terminated_old,
        })
    }

    /// Deletes runs closed longer than `retention` ago and modules nothing needs.
    pub async fn collect_garbage(
        &self,
        retention: Duration,
        dry_run: bool,
    ) -> Result<GarbageView, ClientError> {
        let r = self
            .modules
            .clone()
            .collect_garbage(proto::CollectGarbageRequest {
                retention_ms: retention.as_millis() as u64,
                dry_run,
            })
            .await?
            .into_inner();
        Ok(GarbageView {
            runs: r.runs,
            events: r.events,
            modules: r.modules.into_iter().map(Into::into).collect(),
        })
    }
}
