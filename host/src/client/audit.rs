//! The client's side of auditing: a run's export, fetched from a host.

use super::{Client, ClientError};
use crate::audit::{ChainedRun, Export, ExportedModule, ExportedRun};
use crate::model::{EventHash, RecordedEvent};

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
        // What the export says of the run is read from its events.
        let chained = ChainedRun::of(events.iter().map(|e| &e.event))
            .ok_or_else(|| broken("its history does not begin with workflow_started".into()))?;
        let module = self
            .modules()
            .await?
            .into_iter()
            .find(|m| m.sha256 == chained.module_sha256.as_str());
        let row_status = match run.status.as_str() {
            "stuck" => crate::RunStatus::Stuck,
            _ => crate::RunStatus::Running,
        };
        let sha256 = chained.module_sha256.clone();
        let mut export = Export::new(
            ExportedRun::of(&run.run_id, chained, row_status),
            ExportedModule {
                sha256,
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
