//! The service API: gRPC (`proto/weft/v1/`) and HTTP/JSON on one port.

pub(crate) mod proto;
