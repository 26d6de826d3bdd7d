use super::{Event, RecordedEvent};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// `sha256(previous hash ‖ seq ‖ kind ‖ recorded_at ‖ payload)`, see [`EventHash::chain`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct EventHash(pub [u8; 32]);

impl EventHash {
    /// The hash "before" event 1.
    pub const GENESIS: EventHash = EventHash([0; 32]);

    /// The chain rule. Every field is framed so that no two different events
    /// hash alike: `seq` and `recorded_at` as 8 big-endian bytes, `kind` and the
    /// payload text each preceded by its length as 8 big-endian bytes.
    pub fn chain(
        prev: &EventHash,
        seq: u64,
        kind: &str,
        recorded_at_ms: u64,
        payload: &str,
    ) -> Self {
        let mut h = Sha256::new();
        h.update(prev.0);
        h.update(seq.to_be_bytes());
        h.update((kind.len() as u64).to_be_bytes());
        h.update(kind.as_bytes());
        h.update(recorded_at_ms.to_be_bytes());
        h.update((payload.len() as u64).to_be_bytes());
        h.update(payload.as_bytes());
        EventHash(h.finalize().into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Result<Self, String> {
        let bytes = hex::decode(s).map_err(|e| format!("hash {s:?} is not hex: {e}"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("hash {s:?} is not 32 bytes"))?;
        Ok(EventHash(arr))
    }
}

impl fmt::Debug for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

impl From<EventHash> for String {
    fn from(h: EventHash) -> String {
        h.to_hex()
    }
}

impl TryFrom<String> for EventHash {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        EventHash::from_hex(&s)
    }
}

/// Why a history's chain does not verify: the first event that is out of place.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChainError {
    #[error(
        "event {found} stands where event {expected} should: an event is missing or out of order"
    )]
    Gap { expected: u64, found: u64 },
    #[error(
        "event {seq} ({kind}) does not match its hash: it was altered, or an event before it was"
    )]
    Altered { seq: u64, kind: String },
}

/// A run's events in order, with the chain kept as events are added.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    events: Vec<RecordedEvent>,
}

impl History {
    /// Takes stored events as they are; call [`History::verify`] to check them.
    pub fn from_recorded(events: Vec<RecordedEvent>) -> Self {
        Self { events }
    }

    pub fn events(&self) -> &[RecordedEvent] {
        &self.events
    }

    pub fn into_events(self) -> Vec<RecordedEvent> {
        self.events
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn last_hash(&self) -> EventHash {
        self.events
            .last()
            .map(|e| e.hash)
            .unwrap_or(EventHash::GENESIS)
    }

    /// Appends an event, numbering and hashing it; returns the stored form.
    pub fn push(&mut self, event: Event, recorded_at_ms: u64) -> &RecordedEvent {
        let recorded = seal(
            self.last_hash(),
            self.events.len() as u64 + 1,
            event,
            recorded_at_ms,
        );
        self.events.push(recorded);
        self.events.last().expect("just pushed")
    }

    /// Recomputes the chain and reports the first event out of place.
    pub fn verify(&self) -> Result<(), ChainError> {
        let mut prev = EventHash::GENESIS;
        for (i, e) in self.events.iter().enumerate() {
            let expected = i as u64 + 1;
            if e.seq != expected {
                return Err(ChainError::Gap {
                    expected,
                    found: e.seq,
                });
            }
            let h = EventHash::chain(
                &prev,
                e.seq,
                e.event.kind(),
                e.recorded_at_ms,
                &e.event.payload_json(),
            );
            if h != e.hash {
                return Err(ChainError::Altered {
                    seq: e.seq,
                    kind: e.event.kind().into(),
                });
            }
            prev = h;
        }
        Ok(())
    }
}

/// Numbers and hashes one event that follows `prev`.
pub(crate) fn seal(prev: EventHash, seq: u64, event: Event, recorded_at_ms: u64) -> RecordedEvent {
    let hash = EventHash::chain(
        &prev,
        seq,
        event.kind(),
        recorded_at_ms,
        &event.payload_json(),
    );
    RecordedEvent {
        seq,
        recorded_at_ms,
        event,
        hash,
    }
}
