//! Seals: a closed run's head, signed by a host with a signing key
//! ([`crate::audit::Signer`]), kept beside the run. An export carries its run's
//! seal, so an auditor can check that the history is the one the host closed
//! (see [`crate::audit::check_signature`]).

use super::StoreResult;
use crate::model::{EventHash, RunId};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A closed run's head as a host signed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// The number of events it covers: the whole history of the closed run.
    pub event_count: u64,
    /// The hash of event `event_count`.
    pub head: EventHash,
    /// The sealing host's public key, 64 hex digits.
    pub public_key: String,
    /// The Ed25519 signature of [`crate::audit::sealed_message`], 128 hex digits.
    pub signature: String,
    pub sealed_at_ms: u64,
}

/// Where seals are kept.
#[async_trait]
pub trait SealStore: Send + Sync {
    /// Closed runs without a seal, the earliest closed first, at most `limit`.
    async fn unsealed_runs(&self, limit: u32) -> StoreResult<Vec<RunId>>;
    /// Keeps `seal` for `run_id` if the run is closed and its history ends
    /// at the seal's event count and head; `false` (nothing written) when it
    /// does not, or the run has a seal already (the first one stays).
    async fn put_seal(&self, run_id: &RunId, seal: &Seal) -> StoreResult<bool>;
    /// A run's seal, if it has one.
    async fn seal(&self, run_id: &RunId) -> StoreResult<Option<Seal>>;
}
