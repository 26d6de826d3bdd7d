//! The page tokens of `List`: where the next page starts, bound to the
//! filter it was made for.
//!
//! A token is base64url (no padding) of a small JSON object: the list's key
//! of the last run of the page (its creation time and run id) and a digest
//! of the filter (status, workflow type, workflow id, module, search
//! attributes; not the limit, which may change from page to page). Users
//! pass it back as it is; its shape is not an interface and may change with
//! its `v`. A token is not a secret and needs no MAC: a forged one can only
//! name a place in a list its bearer may read from the start anyway.

use crate::model::{RunId, Sha256Hex, canonical};
use crate::store::{ListCursor, ListFilter};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tonic::Status;

/// The shape of the tokens made now.
const VERSION: u32 = 1;

/// A token longer than this is not one of ours (run ids are short).
const MAX_TOKEN_CHARS: usize = 4 << 10;

/// Hex digits of the filter's digest a token keeps: enough to tell filters apart.
const DIGEST_CHARS: usize = 32;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Token {
    v: u32,
    /// The last run of the page: its `created_at_ms` and run id.
    at: u64,
    run: String,
    filter: String,
}

/// The token of the page after `last` in the list of `filter`.
pub(crate) fn encode(filter: &ListFilter, last: &ListCursor) -> String {
    let token = Token {
        v: VERSION,
        at: last.created_at_ms,
        run: last.run_id.to_string(),
        filter: digest(filter),
    };
    let text = serde_json::to_vec(&token).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(text)
}

/// Where the page that `token` asks for starts, if `token` was made for
/// `filter`; otherwise InvalidArgument saying what to do.
pub(crate) fn decode(filter: &ListFilter, token: &str) -> Result<ListCursor, Status> {
    let malformed = |why: &str| {
        Status::invalid_argument(format!(
            "page_token is not a page token of this server ({why}); pass the next_page_token of the previous page as it was, or start again without page_token"
        ))
    };
    if token.len() > MAX_TOKEN_CHARS {
        return Err(malformed(&format!("it is {} characters long", token.len())));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| malformed("it is not base64url"))?;
    let token: Token =
        serde_json::from_slice(&bytes).map_err(|_| malformed("its content is not a page token"))?;
    if token.v != VERSION {
        return Err(malformed(&format!("it is of version {}", token.v)));
    }
    // Stored times are signed 64-bit: a later one names no run.
    if i64::try_from(token.at).is_err() {
        return Err(malformed("its place is out of range"));
    }
    if token.filter != digest(filter) {
        return Err(Status::invalid_argument(
            "page_token was made for a list with another filter (status, workflow type, workflow id, module or search attributes); list with the filter of the first page, or start again without page_token",
        ));
    }
    Ok(ListCursor {
        created_at_ms: token.at,
        run_id: RunId(token.run),
    })
}

/// The filter's digest: of its canonical JSON, so that neither the order of
/// the search attributes nor serde_json's features change it.
fn digest(filter: &ListFilter) -> String {
    let attributes: Map<String, Value> = filter.search_attributes.iter().cloned().collect();
    let described = json!({
        "workflow_type": filter.workflow_type,
        "status": filter.status.map(|s| s.as_str()),
        "workflow_id": filter.workflow_id,
        "module_sha256": filter.module_sha256.as_ref().map(Sha256Hex::as_str),
        "search_attributes": attributes,
    });
    let mut digest = Sha256Hex::of(canonical::to_canonical(&described).as_bytes()).to_string();
    digest.truncate(DIGEST_CHARS);
    digest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunStatus;

    fn cursor() -> ListCursor {
        ListCursor {
            created_at_ms: 1_700_000_000_123,
            run_id: RunId("run-7".into()),
        }
    }

    fn running() -> ListFilter {
        ListFilter {
            status: Some(RunStatus::Running),
            search_attributes: vec![("a".into(), json!(1)), ("b".into(), json!("x"))],
            limit: 5,
            ..ListFilter::default()
        }
    }

    #[test]
    fn a_token_leads_back_to_its_place_whatever_the_limit() {
        let token = encode(&running(), &cursor());
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "safe in a URL as it is: {token}"
        );
        let later = ListFilter {
            limit: 1000,
            // The same pairs in another order are the same filter.
            search_attributes: vec![("b".into(), json!("x")), ("a".into(), json!(1))],
            ..running()
        };
        assert_eq!(decode(&later, &token).expect("decode"), cursor());
    }

    #[test]
    fn a_token_of_another_filter_is_refused() {
        let token = encode(&running(), &cursor());
        for other in [
            ListFilter::default(),
            ListFilter {
                status: Some(RunStatus::Completed),
                ..running()
            },
            ListFilter {
                search_attributes: vec![("a".into(), json!("1")), ("b".into(), json!("x"))],
                ..running()
            },
            ListFilter {
                workflow_type: Some("order".into()),
                ..running()
            },
            ListFilter {
                module_sha256: Some(Sha256Hex::of(b"m")),
                ..running()
            },
        ] {
            let e = decode(&other, &token).expect_err("another filter");
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains("another filter"), "{}", e.message());
            assert!(
                e.message().contains("start again without page_token"),
                "{}",
                e.message()
            );
        }
    }

    #[test]
    fn a_malformed_token_is_an_invalid_argument() {
        let filter = running();
        let forged = |json: &str| URL_SAFE_NO_PAD.encode(json);
        for token in [
            "%%%".to_owned(),
            "a".to_owned(),
            URL_SAFE_NO_PAD.encode([0xff, 0xfe, 0x00]),
            forged("{}"),
            forged("[1,2]"),
            forged(r#"{"v":2,"at":1,"run":"r","filter":"f"}"#),
            forged(r#"{"v":1,"at":-1,"run":"r","filter":"f"}"#),
            forged(r#"{"v":1,"at":18446744073709551615,"run":"r","filter":"f"}"#),
            forged(r#"{"v":1,"at":1,"run":"r","filter":"f","more":0}"#),
            "A".repeat(MAX_TOKEN_CHARS + 1),
        ] {
            let e = decode(&filter, &token).expect_err("malformed");
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{token}");
            assert!(
                e.message().contains("start again without page_token"),
                "{}",
                e.message()
            );
        }
    }
}
