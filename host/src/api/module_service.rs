//! `weft.v1.ModuleService`: deploying workflow modules, their defaults, the
//! compatibility check, upgrades and garbage collection.

use super::auth::Role;
use super::mapping::{self, status};
use super::proto::{self, module_service_server::ModuleService};
use crate::host::{Host, HostError};
use crate::model::{RunId, Sha256Hex};
use crate::versions::DeployOptions;
use crate::wasm::LoadedModule;
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

pub(crate) struct Modules {
    pub(crate) host: Host,
}

/// A server stream fed by a task through a channel.
type Feed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Results buffered between the task replaying runs and a slow client.
const FEED_BUFFER: usize = 16;

fn feed<T: Send + 'static>(rx: mpsc::Receiver<Result<T, Status>>) -> Feed<T> {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

impl Modules {
    /// Validates, compiles and stores a module and makes it the default of its
    /// name as asked; the version defaults to the first 12 hex digits of its sha256.
    pub(crate) async fn deploy(
        &self,
        r: &proto::DeployRequest,
    ) -> Result<proto::DeployResponse, Status> {
        if r.name.is_empty() {
            return Err(Status::invalid_argument(
                "the module needs a name (weft deploy FILE.wasm --name NAME); runs are started by it",
            ));
        }
        if r.wasm.is_empty() {
            return Err(Status::invalid_argument(
                "the module is empty; send the bytes of a .wasm component",
            ));
        }
        let options = DeployOptions {
            make_default: !r.keep_default,
            check: r.check,
        };
        let deployed = self
            .host
            .deploy_module(&r.name, &r.version, &r.wasm, options)
            .await
            .map_err(|e| match e {
                HostError::Load(load) => Status::invalid_argument(format!(
                    "module {} {} was not deployed: {load}",
                    r.name, r.version
                )),
                e => status(e),
            })?;
        let m = &deployed.module;
        tracing::info!(module = %m.name, version = %m.version, sha256 = %m.sha256, is_default = deployed.is_default, diverging = deployed.diverging.len(), "deployed a module");
        Ok(mapping::deployed(&deployed))
    }

    pub(crate) async fn list(&self) -> Result<Vec<proto::ModuleInfo>, Status> {
        let usage = self
            .host
            .store()
            .module_usage()
            .await
            .map_err(|e| status(e.into()))?;
        Ok(usage.iter().map(mapping::module_usage).collect())
    }

    /// The sha256 a module reference names.
    pub(crate) async fn resolve(&self, r: Option<&proto::ModuleRef>) -> Result<Sha256Hex, Status> {
        let Some(r) = r else {
            return Err(Status::invalid_argument(
                "name the module: its sha256, or its name and version",
            ));
        };
        if !r.sha256.is_empty() {
            return Ok(Sha256Hex(r.sha256.clone()));
        }
        if r.name.is_empty() || r.version.is_empty() {
            return Err(Status::invalid_argument(
                "name the module by sha256, or by both name and version (weft modules list shows them)",
            ));
        }
        self.host
            .module_by_version(&r.name, &r.version)
            .await
            .map(|m| m.sha256)
            .map_err(|e| match e {
                HostError::Other(message) => Status::not_found(message),
                e => status(e),
            })
    }

    async fn loaded(&self, sha256: &Sha256Hex) -> Result<Arc<LoadedModule>, Status> {
        self.host.module(sha256).await.map_err(status)
    }
}

#[tonic::async_trait]
impl ModuleService for Modules {
    async fn deploy(
        &self,
        request: Request<proto::DeployRequest>,
    ) -> Result<Response<proto::DeployResponse>, Status> {
        Ok(Response::new(
            Modules::deploy(self, &request.into_inner()).await?,
        ))
    }

    async fn list_modules(
        &self,
        _request: Request<proto::ListModulesRequest>,
    ) -> Result<Response<proto::ListModulesResponse>, Status> {
        Ok(Response::new(proto::ListModulesResponse {
            modules: self.list().await?,
        }))
    }

    async fn get_module(
        &self,
        request: Request<proto::GetModuleRequest>,
    ) -> Result<Response<proto::GetModuleResponse>, Status> {
        let sha256 = self.resolve(request.get_ref().module.as_ref()).await?;
        let record = self.host.module_record(&sha256).await.map_err(status)?;
        let wasm = self
            .host
            .store()
            .module_bytes(&sha256)
            .await
            .map_err(|e| status(e.into()))?;
        Ok(Response::new(proto::GetModuleResponse {
            module: Some(mapping::module_info(&record)),
            wasm,
        }))
    }

    async fn set_default(
        &self,
        request: Request<proto::SetDefaultRequest>,
    ) -> Result<Response<proto::DeployResponse>, Status> {
        let r = request.into_inner();
        let sha256 = self.resolve(r.module.as_ref()).await?;
        let promoted = self.host.promote(&sha256, r.check).await.map_err(status)?;
        Ok(Response::new(mapping::deployed(&promoted)))
    }

    type CheckStream = Feed<proto::CheckEvent>;

    async fn check(
        &self,
        request: Request<proto::CheckRequest>,
    ) -> Result<Response<Self::CheckStream>, Status> {
        let admin = request.extensions().get::<Role>() == Some(&Role::Admin);
        let r = request.into_inner();
        if r.name.is_empty() {
            return Err(Status::invalid_argument(
                "name the workflow module whose runs to check (weft check FILE.wasm --name NAME)",
            ));
        }
        let module = match r.candidate {
            // Compiling bytes from the caller is as much a power as deploying them.
            Some(proto::check_request::Candidate::Wasm(_)) if !admin => {
                return Err(Status::permission_denied(
                    "checking a module's bytes compiles them, which needs an admin token as deploying does; use an admin token, or have the candidate deployed without making it the default (`weft deploy FILE --name NAME --version V --no-default`) and check that with `--version V`",
                ));
            }
            Some(proto::check_request::Candidate::Wasm(wasm)) => {
                self.host.compile(&wasm).await.map_err(|e| match e {
                    HostError::Load(load) => {
                        Status::invalid_argument(format!("the candidate cannot be checked: {load}"))
                    }
                    e => status(e),
                })?
            }
            Some(proto::check_request::Candidate::Module(m)) => {
                let sha256 = self.resolve(Some(&m)).await?;
                self.loaded(&sha256).await?
            }
            None => {
                return Err(Status::invalid_argument(
                    "give the candidate: its bytes, or a deployed module",
                ));
            }
        };
        let runs = self
            .host
            .check_runs(&r.name, r.closed_sample)
            .await
            .map_err(status)?;
        let (tx, rx) = mpsc::channel(FEED_BUFFER);
        let host = self.host.clone();
        tokio::spawn(async move {
            let total = proto::check_event::Event::Total(runs.len() as u32);
            if tx
                .send(Ok(proto::CheckEvent { event: Some(total) }))
                .await
                .is_err()
            {
                return;
            }
            for run in runs {
                let checked = host.check_run(&module, &run).await;
                let event = proto::check_event::Event::Run(mapping::run_check(&checked));
                if tx
                    .send(Ok(proto::CheckEvent { event: Some(event) }))
                    .await
                    .is_err()
                {
                    // The client went away: stop replaying for nobody.
                    return;
                }
            }
        });
        Ok(Response::new(feed(rx)))
    }

    type UpgradeStream = Feed<proto::UpgradeEvent>;

    async fn upgrade(
        &self,
        request: Request<proto::UpgradeRequest>,
    ) -> Result<Response<Self::UpgradeStream>, Status> {
        let r = request.into_inner();
        let to = self.resolve(r.to.as_ref()).await?;
        let module = self.loaded(&to).await?;
        let target = self.host.module_record(&to).await.map_err(status)?;
        let name = if r.name.is_empty() {
            target.name.clone()
        } else {
            r.name.clone()
        };
        if name != target.name {
            return Err(Status::invalid_argument(format!(
                "module {to} is {} {}, not a version of {name}; upgrade runs of a name to a version of that name",
                target.name, target.version
            )));
        }
        let candidates = self.host.check_runs(&name, 0).await.map_err(status)?;
        let runs: Vec<RunId> = if r.run_ids.is_empty() {
            candidates.into_iter().map(|run| run.run_id).collect()
        } else {
            let mut picked = Vec::new();
            for id in &r.run_ids {
                let id = RunId(id.clone());
                if !candidates.iter().any(|c| c.run_id == id) {
                    return Err(Status::failed_precondition(format!(
                        "run {id} is not an open run of {name}; weft list shows the open runs"
                    )));
                }
                picked.push(id);
            }
            picked
        };
        let (tx, rx) = mpsc::channel(FEED_BUFFER);
        let host = self.host.clone();
        tokio::spawn(async move {
            let total = proto::upgrade_event::Event::Total(runs.len() as u32);
            if tx
                .send(Ok(proto::UpgradeEvent { event: Some(total) }))
                .await
                .is_err()
            {
                return;
            }
            for run_id in runs {
                let item = match host.upgrade_run(&module, &run_id, r.dry_run).await {
                    Ok(u) => Ok(proto::UpgradeEvent {
                        event: Some(proto::upgrade_event::Event::Run(mapping::run_upgrade(&u))),
                    }),
                    Err(e) => Err(status(e)),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(feed(rx)))
    }

    async fn collect_garbage(
        &self,
        request: Request<proto::CollectGarbageRequest>,
    ) -> Result<Response<proto::CollectGarbageResponse>, Status> {
        let r = request.into_inner();
        let garbage = self
            .host
            .collect_garbage(Duration::from_millis(r.retention_ms), r.dry_run)
            .await
            .map_err(status)?;
        tracing::info!(
            runs = garbage.runs,
            events = garbage.events,
            modules = garbage.modules.len(),
            dry_run = r.dry_run,
            "collected garbage"
        );
        Ok(Response::new(mapping::garbage(&garbage)))
    }
}
