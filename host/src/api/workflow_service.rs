//! `weft.v1.WorkflowService`: starting runs, messages to them, reading them.

use super::mapping::{self, json, status};
use super::page_token;
use super::proto::{self, workflow_service_server::WorkflowService};
use crate::host::{Host, StartRequest, UpdateAnswer, UpdateCall};
use crate::model::{RunId, Sha256Hex};
use crate::store::RunStatus;
use crate::versions::{Reapply, ResetRequest};
use std::time::Duration;
use tonic::{Request, Response, Status};

pub(crate) struct Workflows {
    pub(crate) host: Host,
    /// The longest one call waits for a run ([`super::Limits::wait`]):
    /// `AwaitResult` (also when the caller names no limit, or a longer
    /// one), a start's `wait_ms`, an update's answer. The caller asks again.
    pub(crate) wait: Duration,
}

impl Workflows {
    /// Waits up to `limit` for the run to close (following continue-as-new):
    /// the run then, and whether it closed.
    async fn awaited(
        &self,
        run_id: &RunId,
        limit: Duration,
    ) -> Result<(crate::store::RunRecord, bool), Status> {
        match tokio::time::timeout(limit, self.host.wait_workflow(run_id)).await {
            Ok(run) => {
                let run = run.map_err(status)?;
                let closed = run.status != RunStatus::Running;
                Ok((run, closed))
            }
            Err(_) => Ok((self.host.describe(run_id).await.map_err(status)?, false)),
        }
    }

    /// The run a reference names: its run id, or the workflow id's open run
    /// (else its most recent one).
    pub(crate) async fn resolve(&self, run: Option<&proto::RunRef>) -> Result<RunId, Status> {
        let Some(run) = run else {
            return Err(Status::invalid_argument(
                "name the run: set run.workflow_id (and run.run_id for an earlier run)",
            ));
        };
        if !run.run_id.is_empty() {
            return Ok(RunId(run.run_id.clone()));
        }
        if run.workflow_id.is_empty() {
            return Err(Status::invalid_argument(
                "run.workflow_id is empty; give the workflow id the run was started with",
            ));
        }
        match self.host.store().run_by_workflow_id(&run.workflow_id).await {
            Ok(r) => Ok(r.run_id),
            Err(crate::store::StoreError::NotFound { .. }) => Err(Status::not_found(format!(
                "no run of workflow id {:?}; check the id with `weft list`",
                run.workflow_id
            ))),
            Err(e) => Err(status(e.into())),
        }
    }

    /// The module a start runs on: by sha256; else by name and version;
    /// else the default module of the name (the name defaulting to the
    /// workflow type): the one the last deploy, or `weft modules default`, chose.
    async fn module(&self, r: &proto::StartRequest) -> Result<Sha256Hex, Status> {
        if !r.module_sha256.is_empty() {
            return Ok(Sha256Hex(r.module_sha256.clone()));
        }
        let name = if r.module_name.is_empty() {
            &r.workflow_type
        } else {
            &r.module_name
        };
        if !r.module_version.is_empty() {
            return self
                .host
                .module_by_version(name, &r.module_version)
                .await
                .map(|m| m.sha256)
                .map_err(|e| match e {
                    crate::HostError::Other(message) => Status::not_found(message),
                    e => status(e),
                });
        }
        match self.host.store().default_module(name).await {
            Ok(Some(m)) => Ok(m.sha256),
            Ok(None) => Err(Status::not_found(format!(
                "no module named {name:?} is deployed; deploy it with `weft deploy FILE.wasm --name {name}` or name another with --module"
            ))),
            Err(e) => Err(status(e.into())),
        }
    }

    /// An optional module reference: `None` when absent or empty.
    async fn module_ref(
        &self,
        module: Option<&proto::ModuleRef>,
    ) -> Result<Option<Sha256Hex>, Status> {
        match module {
            Some(m) if !(m.sha256.is_empty() && m.name.is_empty()) => Ok(Some(
                super::module_service::Modules {
                    host: self.host.clone(),
                }
                .resolve(Some(m))
                .await?,
            )),
            _ => Ok(None),
        }
    }

    async fn start_request(&self, r: &proto::StartRequest) -> Result<StartRequest, Status> {
        if r.workflow_type.is_empty() {
            return Err(Status::invalid_argument(
                "workflow_type is empty; name the workflow function the module exports",
            ));
        }
        if r.workflow_id.is_empty() {
            return Err(Status::invalid_argument(
                "workflow_id is empty; choose an id that names this business process, e.g. order-1234",
            ));
        }
        let module = self.module(r).await?;
        let mut request = StartRequest::new(
            r.workflow_id.clone(),
            r.workflow_type.clone(),
            json("input_json", &r.input_json)?,
            module,
        );
        request.options = mapping::start_options(r.options.as_ref())?;
        Ok(request)
    }
}

#[tonic::async_trait]
impl WorkflowService for Workflows {
    async fn start(
        &self,
        request: Request<proto::StartRequest>,
    ) -> Result<Response<proto::StartResponse>, Status> {
        let r = request.into_inner();
        let start = self.start_request(&r).await?;
        let module = start.module.to_string();
        let (run_id, run, closed) = match r.wait_ms {
            0 => (self.host.start(start).await.map_err(status)?, None, false),
            ms => {
                let limit = Duration::from_millis(ms).min(self.wait);
                let (run_id, record) = self
                    .host
                    .start_and_wait(start, limit)
                    .await
                    .map_err(status)?;
                let (run, closed) = match record {
                    Some(run) => (run, true),
                    None => (self.host.describe(&run_id).await.map_err(status)?, false),
                };
                (run_id, Some(mapping::run_info(&run)), closed)
            }
        };
        Ok(Response::new(proto::StartResponse {
            run_id: run_id.to_string(),
            workflow_id: r.workflow_id,
            module_sha256: module,
            run,
            closed,
        }))
    }

    async fn signal_with_start(
        &self,
        request: Request<proto::SignalWithStartRequest>,
    ) -> Result<Response<proto::StartResponse>, Status> {
        let r = request.into_inner();
        let Some(start) = r.start else {
            return Err(Status::invalid_argument(
                "start is missing; give the workflow to start when none is open",
            ));
        };
        if r.signal_name.is_empty() {
            return Err(Status::invalid_argument("signal_name is empty"));
        }
        let request = self.start_request(&start).await?;
        let module = request.module.to_string();
        let input = json("signal_input_json", &r.signal_input_json)?;
        let run_id = self
            .host
            .signal_with_start(request, &r.signal_name, input)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::StartResponse {
            run_id: run_id.to_string(),
            workflow_id: start.workflow_id,
            module_sha256: module,
            run: None,
            closed: false,
        }))
    }

    async fn signal(
        &self,
        request: Request<proto::SignalRequest>,
    ) -> Result<Response<proto::SignalResponse>, Status> {
        let r = request.into_inner();
        let run_id = self.resolve(r.run.as_ref()).await?;
        if r.name.is_empty() {
            return Err(Status::invalid_argument("the signal's name is empty"));
        }
        let input = json("input_json", &r.input_json)?;
        self.host
            .signal(&run_id, &r.name, input)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::SignalResponse {
            run_id: run_id.to_string(),
        }))
    }

    async fn query(
        &self,
        request: Request<proto::QueryRequest>,
    ) -> Result<Response<proto::QueryResponse>, Status> {
        let r = request.into_inner();
        let run_id = self.resolve(r.run.as_ref()).await?;
        let input = json("input_json", &r.input_json)?;
        let output = self
            .host
            .query(&run_id, &r.name, input)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::QueryResponse {
            output_json: output.to_string(),
        }))
    }

    async fn update(
        &self,
        request: Request<proto::UpdateRequest>,
    ) -> Result<Response<proto::UpdateResponse>, Status> {
        let r = request.into_inner();
        let run_id = self.resolve(r.run.as_ref()).await?;
        let input = json("input_json", &r.input_json)?;
        let call = UpdateCall {
            run_id: run_id.clone(),
            update_id: Some(r.update_id).filter(|id| !id.is_empty()),
            name: r.name,
            input,
            wait: Some(self.wait),
        };
        let name = call.name.clone();
        match self.host.update_within(call).await.map_err(status)? {
            UpdateAnswer::Answered(output) => Ok(Response::new(proto::UpdateResponse {
                output_json: output.to_string(),
            })),
            UpdateAnswer::Pending { update_id } => Err(Status::deadline_exceeded(format!(
                "run {run_id} has not answered update {name:?} (update id {update_id}) within {}, the longest this host waits in one call; the update is accepted and the run answers it when it next runs: ask again with update_id {update_id} (HTTP: ?update_id={update_id}) to wait for its answer",
                humantime::format_duration(self.wait)
            ))),
        }
    }

    async fn cancel(
        &self,
        request: Request<proto::CancelRequest>,
    ) -> Result<Response<proto::CancelResponse>, Status> {
        let r = request.into_inner();
        let run_id = self.resolve(r.run.as_ref()).await?;
        let reason = if r.reason.is_empty() {
            "cancelled through the API"
        } else {
            &r.reason
        };
        self.host.cancel(&run_id, reason).await.map_err(status)?;
        Ok(Response::new(proto::CancelResponse {
            run_id: run_id.to_string(),
        }))
    }

    async fn terminate(
        &self,
        request: Request<proto::TerminateRequest>,
    ) -> Result<Response<proto::TerminateResponse>, Status> {
        let r = request.into_inner();
        let run_id = self.resolve(r.run.as_ref()).await?;
        let reason = if r.reason.is_empty() {
            "terminated through the API"
        } else {
            &r.reason
        };
        self.host.terminate(&run_id, reason).await.map_err(status)?;
        Ok(Response::new(proto::TerminateResponse {
            run_id: run_id.to_string(),
        }))
    }

    async fn describe(
        &self,
        request: Request<proto::DescribeRequest>,
    ) -> Result<Response<proto::RunInfo>, Status> {
        let run_id = self.resolve(request.get_ref().run.as_ref()).await?;
        let run = self.host.describe(&run_id).await.map_err(status)?;
        let waiting = self.host.waiting_on(&run_id).await.map_err(status)?;
        Ok(Response::new(mapping::run_info_waiting(&run, &waiting)))
    }

    async fn list(
        &self,
        request: Request<proto::ListRequest>,
    ) -> Result<Response<proto::ListResponse>, Status> {
        let r = request.get_ref();
        let mut filter = mapping::list_filter(r)?;
        filter.module_sha256 = self.module_ref(r.module.as_ref()).await?;
        if !r.page_token.is_empty() {
            filter.after = Some(page_token::decode(&filter, &r.page_token)?);
        }
        let page = self.host.list_page(&filter).await.map_err(status)?;
        let (runs, next) = within_page_bytes(&page.runs, page.next);
        Ok(Response::new(proto::ListResponse {
            runs,
            next_page_token: next
                .map(|next| page_token::encode(&filter, &next))
                .unwrap_or_default(),
        }))
    }

    async fn history(
        &self,
        request: Request<proto::HistoryRequest>,
    ) -> Result<Response<proto::HistoryResponse>, Status> {
        let run_id = self.resolve(request.get_ref().run.as_ref()).await?;
        let history = self.host.history(&run_id).await.map_err(status)?;
        let chain_verified = history.verify().is_ok();
        // A head whose chain does not verify is never signed.
        let signature = chain_verified
            .then(|| {
                self.host
                    .sign_head(run_id.as_str(), history.len() as u64, &history.last_hash())
            })
            .flatten()
            .map(|s| proto::HeadSignature {
                public_key: s.public_key,
                signature: s.signature,
            });
        let seal = self
            .host
            .store()
            .seal(&run_id)
            .await
            .map_err(|e| status(e.into()))?
            .map(|s| proto::Seal {
                event_count: s.event_count,
                head: s.head.to_hex(),
                public_key: s.public_key,
                signature: s.signature,
                sealed_at_ms: s.sealed_at_ms,
            });
        Ok(Response::new(proto::HistoryResponse {
            run_id: run_id.to_string(),
            chain_verified,
            signature,
            seal,
            events: history.events().iter().map(mapping::event).collect(),
        }))
    }

    async fn await_result(
        &self,
        request: Request<proto::AwaitResultRequest>,
    ) -> Result<Response<proto::AwaitResultResponse>, Status> {
        let r = request.into_inner();
        let run_id = self.resolve(r.run.as_ref()).await?;
        let limit = match r.timeout_ms {
            0 => self.wait,
            ms => Duration::from_millis(ms).min(self.wait),
        };
        let (run, closed) = self.awaited(&run_id, limit).await?;
        Ok(Response::new(proto::AwaitResultResponse {
            run: Some(mapping::run_info(&run)),
            closed,
        }))
    }

    async fn replay(
        &self,
        request: Request<proto::ReplayRequest>,
    ) -> Result<Response<proto::ReplayResponse>, Status> {
        let run_id = self.resolve(request.get_ref().run.as_ref()).await?;
        let verdict = self.host.replay(&run_id).await.map_err(status)?;
        Ok(Response::new(mapping::replay(&run_id, &verdict)))
    }

    async fn resume(
        &self,
        request: Request<proto::ResumeRequest>,
    ) -> Result<Response<proto::RunInfo>, Status> {
        let r = request.into_inner();
        let run_id = self.resolve(r.run.as_ref()).await?;
        let module = self.module_ref(r.module.as_ref()).await?;
        let record = self
            .host
            .resume(&run_id, module.as_ref())
            .await
            .map_err(status)?;
        Ok(Response::new(mapping::run_info(&record)))
    }

    async fn reset(
        &self,
        request: Request<proto::ResetRequest>,
    ) -> Result<Response<proto::ResetResponse>, Status> {
        let r = request.into_inner();
        let run_id = self.resolve(r.run.as_ref()).await?;
        let module = self.module_ref(r.module.as_ref()).await?;
        let mut reapply = Reapply::default();
        for kind in &r.reapply_exclude {
            match kind.as_str() {
                "signals" => reapply.signals = false,
                "updates" => reapply.updates = false,
                other => {
                    return Err(Status::invalid_argument(format!(
                        "reapply_exclude {other:?} is not a kind of message; use \"signals\" or \"updates\""
                    )));
                }
            }
        }
        let reset = self
            .host
            .reset(ResetRequest {
                run_id,
                to_event: r.to_event,
                module,
                reason: if r.reason.is_empty() {
                    "reset by an operator".into()
                } else {
                    r.reason
                },
                reapply,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ResetResponse {
            run_id: reset.run_id.to_string(),
            workflow_id: reset.workflow_id,
            module_sha256: reset.module_sha256.to_string(),
            kept_events: reset.kept_events,
            signals: reset.signals as u32,
            updates: reset.updates as u32,
            terminated_old: reset.terminated_old,
        }))
    }
}

/// The encoded size a page of runs stays within: under the 4 MiB message
/// every gRPC client takes by default, with room for the rest of the
/// answer. Runs carry outputs and memos of up to 2 MiB each, so a page of
/// many can be far larger.
const PAGE_BYTES: usize = 3 << 20;

/// The runs of a page as the API answers them, at least one and as many
/// as fit in [`PAGE_BYTES`]: a page cut short ends at its last run, and
/// the next one starts after it.
fn within_page_bytes(
    runs: &[crate::store::RunRecord],
    next: Option<crate::store::ListCursor>,
) -> (Vec<proto::RunInfo>, Option<crate::store::ListCursor>) {
    use prost::Message;
    let mut out = Vec::with_capacity(runs.len());
    let mut bytes = 0;
    for run in runs {
        let info = mapping::run_info(run);
        // A field's tag and length prefix, at most 1 + 10 bytes.
        let size = info.encoded_len() + 11;
        if !out.is_empty() && bytes + size > PAGE_BYTES {
            let last = out.len() - 1;
            return (out, Some(crate::store::ListCursor::of(&runs[last])));
        }
        bytes += size;
        out.push(info);
    }
    (out, next)
}
