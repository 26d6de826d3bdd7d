//! Task tokens: what a remote worker gets with each attempt it polls and
//! sends back with its report (complete, fail, heartbeat).
//!
//! A token names the attempt — run id, activity seq, the attempt's lease
//! token and its number — in clear, and ends in an HMAC-SHA256 over those
//! and the worker credential the poll came with (the SHA-256 digest of its
//! bearer token; nothing on an open host):
//!
//! ```text
//! 1b167fe2b1610fd2ad375636a61b38b1/1/17/1.<43 characters of base64url>
//! ```
//!
//! So a report is taken only for an attempt this database's hosts handed
//! out, and only from the credential that claimed it: a holder of another
//! worker token can neither forge a token nor use one it has seen. The key
//! is the database's ([`crate::store::SecretStore::task_token_key`]), so a
//! task claimed through one host may be reported through any other, and
//! through the same host after a restart. Workers treat the token as an
//! opaque string and echo it back.

use super::auth::Credential;
use crate::model::RunId;
use crate::store::ActivityTask;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;
use tonic::Status;

type HmacSha256 = hmac::Hmac<sha2_mac::Sha256>;

/// Bytes of the MAC at the end of a token.
const MAC_BYTES: usize = 32;

/// Keeps tokens of this scheme apart from anything else the key might MAC.
const DOMAIN: &[u8] = b"weft task token v1";

/// The key task tokens are MAC'd with: the database's, read once.
#[derive(Clone)]
pub(crate) struct TaskTokenKey([u8; 32]);

impl TaskTokenKey {
    pub(crate) fn new(key: [u8; 32]) -> Self {
        Self(key)
    }
}

impl std::fmt::Debug for TaskTokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TaskTokenKey(..)")
    }
}

/// One attempt, as a task token names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TaskToken {
    pub(crate) run_id: RunId,
    pub(crate) seq: u32,
    pub(crate) lease_token: i64,
    pub(crate) attempt: u32,
}

impl TaskToken {
    pub(crate) fn of(task: &ActivityTask) -> Self {
        Self {
            run_id: task.run_id.clone(),
            seq: task.seq,
            lease_token: task.lease_token,
            attempt: task.attempt,
        }
    }

    /// The token handed to the worker whose poll came with `credential`.
    pub(crate) fn encode(&self, key: &TaskTokenKey, credential: &Credential) -> String {
        let mac = self.mac(key, credential);
        format!(
            "{}/{}/{}/{}.{}",
            self.run_id,
            self.seq,
            self.lease_token,
            self.attempt,
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// The attempt `token` names, if its MAC holds for the caller's
    /// `credential`. The MAC is checked before anything is looked up, so
    /// a refusal says nothing of whether such a task exists.
    pub(crate) fn verify(
        token: &str,
        key: &TaskTokenKey,
        credential: &Credential,
    ) -> Result<Self, Status> {
        let bad = || {
            Status::invalid_argument(format!(
                "task_token {token:?} is not one this host handed out; send the task_token of the polled task unchanged"
            ))
        };
        let (fields, last) = token.rsplit_once('/').ok_or_else(bad)?;
        let Some((attempt, mac)) = last.split_once('.') else {
            // `run/seq/lease[/attempt]`: what hosts handed out before tokens had a MAC.
            return Err(Status::failed_precondition(
                "this task token has no MAC: it was handed out by a host from before an upgrade, and is no longer accepted; drop the attempt, its result is not recorded, and the task is run again once its lease expires",
            ));
        };
        let mut parts = fields.rsplitn(3, '/');
        let (Some(lease_token), Some(seq), Some(run_id)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if run_id.is_empty() {
            return Err(bad());
        }
        let claimed = Self {
            run_id: RunId(run_id.to_owned()),
            seq: seq.parse().map_err(|_| bad())?,
            lease_token: lease_token.parse().map_err(|_| bad())?,
            attempt: attempt.parse().map_err(|_| bad())?,
        };
        // A token whose fields do not read back exactly as written (a `+1`,
        // a leading zero) was not written by a host.
        let given = URL_SAFE_NO_PAD.decode(mac).ok();
        let expected = claimed.mac(key, credential);
        let holds = given
            .filter(|g| g.len() == MAC_BYTES)
            .is_some_and(|g| bool::from(g.as_slice().ct_eq(&expected)))
            && fields_canonical(&claimed, fields, attempt);
        if !holds {
            return Err(Status::permission_denied(
                "this task token was issued to another worker credential, or is damaged; report with the worker token the task was polled with, and send its task_token unchanged",
            ));
        }
        Ok(claimed)
    }

    fn mac(&self, key: &TaskTokenKey, credential: &Credential) -> [u8; MAC_BYTES] {
        let mut mac = HmacSha256::new_from_slice(&key.0).expect("HMAC takes any key length");
        mac.update(DOMAIN);
        // Each variable-length part goes with its length, so no two
        // different tokens MAC the same bytes.
        let run_id = self.run_id.as_str().as_bytes();
        mac.update(&(run_id.len() as u64).to_be_bytes());
        mac.update(run_id);
        mac.update(&self.seq.to_be_bytes());
        mac.update(&self.lease_token.to_be_bytes());
        mac.update(&self.attempt.to_be_bytes());
        let credential = credential.as_bytes();
        mac.update(&(credential.len() as u64).to_be_bytes());
        mac.update(credential);
        mac.finalize().into_bytes().into()
    }

    /// The refusal of a report for an attempt that is no longer current.
    pub(crate) fn stale(&self, reason: &str) -> Status {
        Status::failed_precondition(format!(
            "activity {} of run {} is no longer this attempt's ({reason}); drop the attempt, its result is not recorded",
            self.seq, self.run_id
        ))
    }
}

/// Whether the token's fields are written as the host writes them.
fn fields_canonical(token: &TaskToken, fields: &str, attempt: &str) -> bool {
    fields == format!("{}/{}/{}", token.run_id, token.seq, token.lease_token)
        && attempt == token.attempt.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> TaskTokenKey {
        TaskTokenKey::new([byte; 32])
    }

    fn token() -> TaskToken {
        TaskToken {
            run_id: RunId("1b167fe2b1610fd2ad375636a61b38b1".into()),
            seq: 3,
            lease_token: 17,
            attempt: 2,
        }
    }

    #[test]
    fn a_token_reads_back_only_with_its_key_and_credential() {
        let alice = Credential::of_token("alice");
        let text = token().encode(&key(1), &alice);
        assert!(text.starts_with("1b167fe2b1610fd2ad375636a61b38b1/3/17/2."));
        assert!(
            text.bytes().all(|b| b.is_ascii_graphic()),
            "one printable string: {text}"
        );
        assert_eq!(TaskToken::verify(&text, &key(1), &alice).unwrap(), token());

        let refused = |text: &str, key: &TaskTokenKey, who: &Credential| {
            TaskToken::verify(text, key, who).expect_err(text).code()
        };
        use tonic::Code;
        assert_eq!(
            refused(&text, &key(1), &Credential::of_token("bob")),
            Code::PermissionDenied
        );
        assert_eq!(
            refused(&text, &key(1), &Credential::open()),
            Code::PermissionDenied
        );
        assert_eq!(refused(&text, &key(2), &alice), Code::PermissionDenied);

        // Issued on an open host: accepted there, by no credential.
        let open = token().encode(&key(1), &Credential::open());
        assert_eq!(
            TaskToken::verify(&open, &key(1), &Credential::open()).unwrap(),
            token()
        );
        assert_eq!(refused(&open, &key(1), &alice), Code::PermissionDenied);
    }

    #[test]
    fn an_altered_token_is_refused() {
        let who = Credential::of_token("alice");
        let text = token().encode(&key(1), &who);
        let (fields, mac) = text.rsplit_once('.').unwrap();
        let flipped_mac = {
            let mut m = mac.to_owned().into_bytes();
            m[0] = if m[0] == b'A' { b'B' } else { b'A' };
            String::from_utf8(m).unwrap()
        };
        for altered in [
            format!("1b167fe2b1610fd2ad375636a61b38b2/3/17/2.{mac}"),
            format!("1b167fe2b1610fd2ad375636a61b38b1/4/17/2.{mac}"),
            format!("1b167fe2b1610fd2ad375636a61b38b1/3/18/2.{mac}"),
            format!("1b167fe2b1610fd2ad375636a61b38b1/3/17/3.{mac}"),
            format!("1b167fe2b1610fd2ad375636a61b38b1/3/+17/2.{mac}"),
            format!("1b167fe2b1610fd2ad375636a61b38b1/03/17/2.{mac}"),
            format!("{fields}.{flipped_mac}"),
            format!("{fields}.{}", &mac[..mac.len() - 1]),
            format!("{fields}.{mac}A"),
            format!("{fields}."),
            format!("{fields}.!!!"),
        ] {
            let e = TaskToken::verify(&altered, &key(1), &who).expect_err(&altered);
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{altered}: {e}");
            assert!(
                e.message()
                    .contains("issued to another worker credential, or is damaged"),
                "{e}"
            );
        }
        for malformed in ["", "x", "/3/17/2.AAAA", "r/x/17/2.AAAA", "r/3/17/x.AAAA"] {
            let e = TaskToken::verify(malformed, &key(1), &who).expect_err(malformed);
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{malformed}: {e}");
        }
    }

    #[test]
    fn a_token_from_before_macs_is_refused_as_stale() {
        for old in [
            "1b167fe2b1610fd2ad375636a61b38b1/3/17/2",
            "1b167fe2b1610fd2ad375636a61b38b1/3/17",
        ] {
            let e = TaskToken::verify(old, &key(1), &Credential::open()).expect_err(old);
            assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
            assert!(e.message().contains("has no MAC"), "{e}");
            assert!(e.message().contains("once its lease expires"), "{e}");
        }
    }
}
