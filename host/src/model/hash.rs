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
    /// hash alike. Byte for byte, the SHA-256 input is:
    ///
    /// | bytes | what |
    /// |---|---|
    /// | 32 | the previous event's hash ([`EventHash::GENESIS`], all zeros, before event 1) |
    /// | 8 | `seq`, the event's number from 1, unsigned big-endian |
    /// | 8 | the length of `kind` in bytes, unsigned big-endian |
    /// | n | `kind`, the event's stable name in ASCII (`workflow_started`) |
    /// | 8 | `recorded_at_ms`, ms since the Unix epoch, unsigned big-endian |
    /// | 8 | the length of the payload text in bytes, unsigned big-endian |
    /// | m | the payload text: the event's fields but `kind` as one JSON object, in the canonical form of [`super::canonical`] (sorted keys, no whitespace, fixed string escapes and number format), UTF-8 |
    ///
    /// Test vectors (events, their payload text and hashes) are kept in
    /// `host/tests/vectors/chain.json` and checked by this module's tests.
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
        self.verify_measured().map(|_| ())
    }

    /// [`History::verify`], and the history's size in bytes: the sum of its
    /// events' canonical payload texts, as the run's history limits count it.
    pub fn verify_measured(&self) -> Result<u64, ChainError> {
        let mut bytes = 0u64;
        let mut prev = EventHash::GENESIS;
        for (i, e) in self.events.iter().enumerate() {
            let expected = i as u64 + 1;
            if e.seq != expected {
                return Err(ChainError::Gap {
                    expected,
                    found: e.seq,
                });
            }
            let payload = e.event.payload_json();
            bytes += payload.len() as u64;
            let h = EventHash::chain(&prev, e.seq, e.event.kind(), e.recorded_at_ms, &payload);
            if h != e.hash {
                return Err(ChainError::Altered {
                    seq: e.seq,
                    kind: e.event.kind().into(),
                });
            }
            prev = h;
        }
        Ok(bytes)
    }
}

/// Numbers and hashes one event that follows `prev`.
pub(crate) fn seal(prev: EventHash, seq: u64, event: Event, recorded_at_ms: u64) -> RecordedEvent {
    seal_measured(prev, seq, event, recorded_at_ms).0
}

/// [`seal`], and the length of the event's payload text (what
/// [`History::verify_measured`] counts).
pub(crate) fn seal_measured(
    prev: EventHash,
    seq: u64,
    event: Event,
    recorded_at_ms: u64,
) -> (RecordedEvent, usize) {
    let payload = event.payload_json();
    let hash = EventHash::chain(&prev, seq, event.kind(), recorded_at_ms, &payload);
    let recorded = RecordedEvent {
        seq,
        recorded_at_ms,
        event,
        hash,
    };
    (recorded, payload.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The committed vectors: each payload text is the canonical text of
    /// the event it describes, and the chain over them gives their hashes.
    /// A change to how events are written or hashed fails here first.
    #[test]
    fn the_chain_test_vectors_hold() {
        let text = include_str!("../../tests/vectors/chain.json");
        let vectors: Value = serde_json::from_str(text).unwrap();
        let mut prev = EventHash::GENESIS;
        let events = vectors["events"].as_array().unwrap();
        assert!(events.len() >= 7);
        for v in events {
            let seq = v["seq"].as_u64().unwrap();
            let kind = v["kind"].as_str().unwrap();
            let at = v["recorded_at_ms"].as_u64().unwrap();
            let payload = v["payload"].as_str().unwrap();
            let event = Event::from_parts(kind, payload).unwrap();
            assert_eq!(
                event.payload_json(),
                payload,
                "event {seq}'s canonical text"
            );
            let hash = EventHash::chain(&prev, seq, kind, at, payload);
            assert_eq!(
                hash.to_hex(),
                v["hash"].as_str().unwrap(),
                "event {seq}'s hash"
            );
            prev = hash;
        }
    }
}
