//! Signed heads: a host with a signing key (Ed25519) signs the head of every
//! history it hands out, so that an export proves, to anyone holding the
//! host's public key and nothing else, that it is the record that host
//! exported. The signature covers the run id, the event count and the head
//! hash; the head covers every event before it. A file edited and re-chained
//! after the export keeps a valid chain but loses the signature.
//!
//! What it does not prove: that the database was not edited before the
//! export. For that, keep heads elsewhere as runs close (`weft verify
//! --head`).

use super::{AuditError, Export};
use crate::model::EventHash;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A host's signing key.
#[derive(Clone)]
pub struct Signer(SigningKey);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer(public key {})", self.public_key())
    }
}

/// A head's signature, as an export carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadSignature {
    /// The signer's public key, 64 hex digits.
    pub public_key: String,
    /// The Ed25519 signature of [`signed_message`], 128 hex digits.
    pub signature: String,
}

/// The bytes a head signature covers.
pub fn signed_message(run_id: &str, event_count: u64, head: &EventHash) -> Vec<u8> {
    format!(
        "weft-history/1 signed head\nrun {run_id}\nevents {event_count}\nhead {}\n",
        head.to_hex()
    )
    .into_bytes()
}

impl Signer {
    /// A new key from the operating system's randomness.
    pub fn generate() -> Result<Self, String> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| format!("no randomness for a key: {e}"))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// A key from its secret, 64 hex digits (what `weft keygen` writes).
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text.trim()).map_err(|e| e.to_string())?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "a signing key is 32 bytes (64 hex digits)".to_owned())?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// A key from a file `weft keygen` wrote.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the signing key {}: {e}", path.display()))?;
        Self::from_hex(&text).map_err(|e| {
            format!(
                "{} is not a signing key ({e}); make one with `weft keygen -o FILE`",
                path.display()
            )
        })
    }

    /// The secret, 64 hex digits: keep it where only the host can read it.
    pub fn secret_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// The public key, 64 hex digits: give it to auditors.
    pub fn public_key(&self) -> String {
        hex::encode(self.0.verifying_key().to_bytes())
    }

    /// Signs a run's head.
    pub fn sign_head(&self, run_id: &str, event_count: u64, head: &EventHash) -> HeadSignature {
        let signature = self.0.sign(&signed_message(run_id, event_count, head));
        HeadSignature {
            public_key: self.public_key(),
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

/// Checks that a verified export's head is signed by `public_key` (64 hex digits).
pub fn check_signature(export: &Export, public_key: &str) -> Result<(), AuditError> {
    let expected = public_key.trim().to_ascii_lowercase();
    let key_bytes: [u8; 32] = hex::decode(&expected)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| AuditError::BadKey(public_key.to_owned()))?;
    let key = VerifyingKey::from_bytes(&key_bytes)
        .map_err(|_| AuditError::BadKey(public_key.to_owned()))?;
    let Some(signed) = &export.signature else {
        return Err(AuditError::Unsigned);
    };
    if signed.public_key.to_ascii_lowercase() != expected {
        return Err(AuditError::WrongSigner {
            expected,
            found: signed.public_key.clone(),
        });
    }
    let signature = hex::decode(&signed.signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b))
        .ok_or(AuditError::BadSignature)?;
    let message = signed_message(&export.run.run_id, export.event_count, &export.head);
    key.verify(&message, &signature)
        .map_err(|_| AuditError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_survives_its_hex_and_signs_what_it_covers() {
        let signer = Signer::generate().unwrap();
        let again = Signer::from_hex(&signer.secret_hex()).unwrap();
        assert_eq!(again.public_key(), signer.public_key());
        assert!(format!("{signer:?}").contains(&signer.public_key()));
        assert!(!format!("{signer:?}").contains(&signer.secret_hex()));
        let head = EventHash::GENESIS;
        let a = signer.sign_head("run-1", 3, &head);
        assert_eq!(
            a,
            again.sign_head("run-1", 3, &head),
            "Ed25519 is deterministic"
        );
        assert_ne!(a, signer.sign_head("run-1", 4, &head));
        assert_ne!(a, signer.sign_head("run-2", 3, &head));
        assert!(Signer::from_hex("abcd").is_err());
    }
}
