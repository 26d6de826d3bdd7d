//! Generated from `proto/weft/v1/*.proto` by `build.rs`: the wire types and
//! the tonic clients and servers. Nothing outside `api`, `client` and
//! `worker` sees these; conversions live in [`super::mapping`].

#![allow(
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    reason = "generated code"
)]

tonic::include_proto!("weft.v1");
