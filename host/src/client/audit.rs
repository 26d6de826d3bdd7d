//! The client's side of auditing: a run's export, fetched from a host.

use super::{Client, ClientError};
use crate::audit::{Export, ExportedModule, ExportedRun};
use crate::model::{EventHash, Failure, RecordedEvent, Sha256Hex};

impl Client {
    /// A run's complete record as [`crate::audit::Export`]: the run, its
    /// module's name and version, and every event as stored.
    pub async fn export(
        &self,
        workflow_id: &str,
        run_id: Option<&str>,
    ) -> Result<Export, ClientError> {
        let run = self.describe(workflow_id, run_id).await?;
        let history = self.history(workflow_id, Some(&run.run_id)).await?;
        let signature = history.signature.clone();
        let seal = history.seal.clone();
        let module = self
            .modules()
            .await?
            .into_iter()
            .find(|m| m.sha256 == run.module_sha256);
        let broken = |what: String| ClientError {
            code: tonic::Code::DataLoss,
            message: format!("run {}: {what}", run.run_id),
        };
        let mut events = Vec::with_capacity(history.events.len());
        for e in history.events {
            events.push(RecordedEvent {
                seq: e.seq,
                recorded_at_ms: e.recorded_at_ms,
                event: serde_json::from_value(e.event)
                    .map_err(|err| broken(format!("event {} cannot be read: {err}", e.seq)))?,
                hash: EventHash::from_hex(&e.hash)
                    .map_err(|err| broken(format!("event {}: {err}", e.seq)))?,
            });
        }
        let exported_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut export = Export::new(
            ExportedRun {
                run_id: run.run_id.clone(),
                workflow_id: run.workflow_id,
                workflow_type: run.workflow_type,
                status: run.status,
                output: run.output,
                failure: run.failure.map(|f| Failure::new(f.error_type, f.message)),
            },
            ExportedModule {
                sha256: Sha256Hex(run.module_sha256),
                name: module.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
                version: module.map(|m| m.version).unwrap_or_default(),
            },
            events,
            exported_at_ms,
        );
        export.signature = signature;
        export.seal = seal;
        Ok(export)
    }
}
