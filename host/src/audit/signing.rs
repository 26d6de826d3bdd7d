//! Signed heads: a host with a signing key (Ed25519) signs the head of every
//! history it hands out, so that an export proves, to anyone holding the
//! host's public key and nothing else, that it is the record that host
//! exported. The signature covers the run id, the event count and the head
//! hash; the head covers every event before it. A file edited and re-chained
//! after the export keeps a valid chain but loses the signature.
//!
//! Seals: the same key signs each run's head once the run has closed
//! ([`Signer::seal`], kept in the store by the host's seal loop), so a closed
//! history edited in the database afterwards — even re-chained, and signed
//! again at export — no longer matches its seal. What neither proves: that
//! an open run's history was not edited before its export; for that, keep
//! heads elsewhere (`weft verify --head`).

use super::{AuditError, Export, anchored};
use crate::model::EventHash;
use crate::store::Seal;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
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

/// The bytes a seal's signature covers: a closed run's whole history. Not
/// the bytes of [`signed_message`], so an export's signature cannot pass for
/// a seal.
pub fn sealed_message(run_id: &str, event_count: u64, head: &EventHash) -> Vec<u8> {
    format!(
        "weft-history/1 sealed closed run\nrun {run_id}\nevents {event_count}\nhead {}\n",
        head.to_hex()
    )
    .into_bytes()
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

    /// A key from a file `weft keygen` wrote. On unix the file must be
    /// readable by its owner only: a key others can read is refused.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|e| format!("cannot read the signing key {}: {e}", path.display()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(format!(
                    "the signing key {} can be read by others (mode {:o}): anyone who reads it can sign as this host; run `chmod 600 {}` (and make a new key with `weft keygen` if others may have read it)",
                    path.display(),
                    mode & 0o777,
                    path.display()
                ));
            }
        }
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

    /// Seals a closed run's history: its event count and head.
    pub fn seal(&self, run_id: &str, event_count: u64, head: &EventHash, now_ms: u64) -> Seal {
        let signature = self.0.sign(&sealed_message(run_id, event_count, head));
        Seal {
            event_count,
            head: *head,
            public_key: self.public_key(),
            signature: hex::encode(signature.to_bytes()),
            sealed_at_ms: now_ms,
        }
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

/// Checks that a verified export's head is signed by `public_key` (64 hex
/// digits), and that a closed run's history is the one that key sealed when
/// the run closed (see [`crate::store::Seal`]).
///
/// Whether the run is closed is read from its events, not from what the
/// export's `run` says: a history whose last event closes the run must
/// carry a valid seal, and a `run.status` that claims the run open while
/// the chain ends in a closing event is refused.
pub fn check_signature(export: &Export, public_key: &str) -> Result<(), AuditError> {
    check_export_signature(export, public_key)?;
    let closed = export.events.last().and_then(|e| {
        let event = crate::model::Event::from_parts(&e.kind, &e.payload.to_string()).ok()?;
        super::closed_by(&event).map(|c| (e.seq, e.kind.clone(), c.status))
    });
    let claims_open = matches!(export.run.status.as_str(), "running" | "stuck");
    match (&export.seal, closed) {
        (_, Some((seq, kind, status))) if claims_open => Err(AuditError::RunDiffers {
            field: "run.status".into(),
            stated: format!("{:?}", export.run.status),
            chained: format!(
                "{:?} (event {seq}, {kind}, closes the run)",
                status.as_str()
            ),
        }),
        (Some(seal), _) => check_seal(export, seal, public_key),
        (None, None) => Ok(()),
        (None, Some((_, _, status))) => Err(AuditError::Unsealed {
            status: status.as_str().into(),
        }),
    }
}

fn check_seal(export: &Export, seal: &Seal, public_key: &str) -> Result<(), AuditError> {
    let broken = |how: String| AuditError::SealBroken { how };
    let message = sealed_message(&export.run.run_id, seal.event_count, &seal.head);
    if !signed_by(public_key, &seal.public_key, &seal.signature, &message)? {
        return Err(broken(
            "the seal's signature does not match its run id, event count and head".into(),
        ));
    }
    match anchored(export, &seal.head) {
        Ok(seq) if seq == seal.event_count && export.event_count == seal.event_count => Ok(()),
        Ok(seq) => Err(broken(format!(
            "the sealed head is event {seq}'s hash, but the run closed with {} events and the export holds {}",
            seal.event_count, export.event_count
        ))),
        Err(_) => Err(broken(format!(
            "no event has the sealed head {} (event {})",
            seal.head.to_hex(),
            seal.event_count
        ))),
    }
}

/// Checks that the export's head is signed by `public_key`.
fn check_export_signature(export: &Export, public_key: &str) -> Result<(), AuditError> {
    let Some(signed) = &export.signature else {
        verifying_key(public_key)?;
        return Err(AuditError::Unsigned);
    };
    let message = signed_message(&export.run.run_id, export.event_count, &export.head);
    if signed_by(public_key, &signed.public_key, &signed.signature, &message)? {
        Ok(())
    } else {
        Err(AuditError::BadSignature)
    }
}

/// Whether `signature` (hex) of `message` was made with `public_key`, the
/// key the auditor trusts. The key the signature names (`named`) must be
/// that one, else [`AuditError::WrongSigner`]; a key that is not one is
/// [`AuditError::BadKey`]. Case is ignored in both keys.
fn signed_by(
    public_key: &str,
    named: &str,
    signature: &str,
    message: &[u8],
) -> Result<bool, AuditError> {
    let key = verifying_key(public_key)?;
    let expected = public_key.trim().to_ascii_lowercase();
    if named.to_ascii_lowercase() != expected {
        return Err(AuditError::WrongSigner {
            expected,
            found: named.to_owned(),
        });
    }
    Ok(hex::decode(signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        // Strict: no small-order keys, no malleable (non-canonical) signatures.
        .is_some_and(|b| {
            key.verify_strict(message, &Signature::from_bytes(&b))
                .is_ok()
        }))
}

/// The key `public_key` names, or [`AuditError::BadKey`].
fn verifying_key(public_key: &str) -> Result<VerifyingKey, AuditError> {
    hex::decode(public_key.trim().to_ascii_lowercase())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| AuditError::BadKey(public_key.to_owned()))
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

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.key");
        let signer = Signer::generate().unwrap();
        std::fs::write(&path, signer.secret_hex()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            Signer::from_file(&path).unwrap().public_key(),
            signer.public_key()
        );
        for mode in [0o640, 0o604, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = Signer::from_file(&path).unwrap_err();
            assert!(e.contains("chmod 600") && e.contains("host.key"), "{e}");
        }
    }

    /// A signature `verify` takes but `verify_strict` refuses: with the
    /// identity point as the public key (small order), R the identity and
    /// s = 0 "sign" every message.
    #[test]
    fn a_weak_key_signs_nothing() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let key = hex::encode(identity);
        let mut sig = [0u8; 64];
        sig[0] = 1;
        let message = signed_message("run-1", 3, &EventHash([3; 32]));
        assert_eq!(
            signed_by(&key, &key, &hex::encode(sig), &message),
            Ok(false)
        );
        let signer = Signer::generate().unwrap();
        let good = signer.sign_head("run-1", 3, &EventHash([3; 32]));
        let key = signer.public_key();
        assert_eq!(signed_by(&key, &key, &good.signature, &message), Ok(true));
    }
}
