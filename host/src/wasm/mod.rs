//! The WebAssembly side: one shared [`WasmEngine`], compiled modules cached by
//! sha256 ([`LoadedModule`]) in memory and, tagged with a per-host key, on disk
//! (see `cache.rs`: only artifacts this host wrote are loaded), and guest
//! [`Instance`]s driven one activation at a time.
//!
//! Determinism by construction lives here. A workflow guest links against
//! Weft's own `context` interface plus a *virtual* WASI ([`state`]): clocks
//! answer workflow time, randomness comes from the run's recorded seed,
//! stdout/stderr become log lines that are dropped while replaying, and there
//! is no filesystem content, network or environment. Any other import is
//! refused when the module is loaded, naming the import ([`LoadError::ForbiddenImport`]).
//! NaN canonicalization is on; an epoch deadline bounds each activation and a
//! memory cap each instance, so a runaway guest fails its activation with a
//! [`GuestError`] and never stalls the host.
//!
//! ```no_run
//! # fn f(bytes: Vec<u8>) -> Result<(), weft::wasm::LoadError> {
//! use weft::wasm::{EngineConfig, WasmEngine};
//! let engine = WasmEngine::new(EngineConfig::default()).expect("an engine");
//! let module = engine.load(&bytes)?; // validated, compiled, cached
//! println!("loaded {}", module.sha256());
//! # Ok(()) }
//! ```

mod bindings;
mod cache;
mod context;
mod engine;
mod instance;
mod state;

pub(crate) use bindings::{name as check_name, warn_if_large};
pub use engine::{EngineConfig, LoadError, LoadedModule, WasmEngine};
pub use instance::{Activation, GuestError, Instance, InstanceOptions};
pub use state::RunInfo;
pub(crate) use state::RunRng;
