//! A workflow that reaches the network directly instead of through an
//! activity. Its component imports `wasi:sockets`, so a Weft host refuses to
//! load it and names that import.

use weft_sdk::{Context, WorkflowError};

async fn phone_home(_ctx: Context, address: String) -> Result<bool, WorkflowError> {
    Ok(std::net::TcpStream::connect(address.as_str()).is_ok())
}

weft_sdk::export_workflows!(phone_home);
