//! `weft.v1.ModuleService`: deploying workflow modules and listing them.

use super::mapping::{self, status};
use super::proto::{self, module_service_server::ModuleService};
use crate::host::Host;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

pub(crate) struct Modules {
    pub(crate) host: Host,
}

impl Modules {
    /// Validates, compiles and stores a module; the version defaults to the
    /// first 12 hex digits of its sha256.
    pub(crate) async fn deploy(
        &self,
        name: &str,
        version: &str,
        wasm: &[u8],
    ) -> Result<proto::ModuleInfo, Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument(
                "the module needs a name (weft deploy FILE.wasm --name NAME); runs are started by it",
            ));
        }
        if wasm.is_empty() {
            return Err(Status::invalid_argument(
                "the module is empty; send the bytes of a .wasm component",
            ));
        }
        let version = if version.is_empty() {
            hex::encode(Sha256::digest(wasm))[..12].to_owned()
        } else {
            version.to_owned()
        };
        let record = self
            .host
            .deploy(name, &version, wasm)
            .await
            .map_err(|e| match e {
                crate::HostError::Load(load) => Status::invalid_argument(format!(
                    "module {name} {version} was not deployed: {load}"
                )),
                e => status(e),
            })?;
        tracing::info!(module = %name, %version, sha256 = %record.sha256, "deployed a module");
        Ok(mapping::module_info(&record))
    }

    pub(crate) async fn list(&self) -> Result<Vec<proto::ModuleInfo>, Status> {
        let modules = self
            .host
            .store()
            .modules()
            .await
            .map_err(|e| status(e.into()))?;
        Ok(modules.iter().map(mapping::module_info).collect())
    }
}

#[tonic::async_trait]
impl ModuleService for Modules {
    async fn deploy(
        &self,
        request: Request<proto::DeployRequest>,
    ) -> Result<Response<proto::ModuleInfo>, Status> {
        let r = request.into_inner();
        Ok(Response::new(
            Modules::deploy(self, &r.name, &r.version, &r.wasm).await?,
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
}
