use super::bindings::WorkflowPre;
use super::cache::DiskCache;
use super::state::GuestState;
use crate::model::Sha256Hex;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, Linker, types::ComponentItem};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How the engine runs guests.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Largest linear memory one instance may grow to.
    pub memory_limit_bytes: usize,
    /// Wall-clock budget of one guest call (one activation, one query).
    pub activation_timeout: Duration,
    /// Instances the pooling allocator keeps slots for (about 10 µs to
    /// instantiate instead of 25); 0 allocates on demand. Keep it above the
    /// host's warm instances plus concurrent activations.
    pub pooled_instances: u32,
    /// Where compiled modules are cached across restarts; `None` keeps them
    /// in memory only. Created 0700, with a per-host key (`cache-mac.key`,
    /// 0600) that tags each artifact: an artifact whose tag does not match is
    /// compiled again, never loaded.
    pub cache_dir: Option<PathBuf>,
    /// Largest payload (input, output, signal) a guest may pass, in bytes.
    pub max_payload_bytes: usize,
    /// What one run may hold: pending work, commands per activation,
    /// search attributes, history size.
    pub run_limits: crate::limits::RunLimits,
    /// Largest module the engine compiles, in bytes.
    pub max_module_bytes: usize,
    /// Compiled modules kept in memory; the least recently used beyond
    /// this are dropped (and compiled again, or read from `cache_dir`,
    /// when next needed).
    pub max_loaded_modules: usize,
    /// Compilations the host runs at once (each takes a core for a while).
    pub max_concurrent_compiles: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            memory_limit_bytes: 64 << 20,
            activation_timeout: Duration::from_secs(2),
            pooled_instances: 1152,
            cache_dir: None,
            max_payload_bytes: 2 << 20,
            run_limits: crate::limits::RunLimits::default(),
            max_module_bytes: 64 << 20,
            max_loaded_modules: 128,
            max_concurrent_compiles: 2,
        }
    }
}

/// Bytes of a pooled memory or table slot kept resident between instances.
const KEEP_RESIDENT: usize = 1 << 20;

/// Epochs tick this often; the activation budget is counted in ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Why a module could not be loaded. Each names the module and the fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "module {sha256} is not a valid WebAssembly component: {reason}; build it with `cargo build --target wasm32-wasip2` against weft-sdk"
    )]
    Invalid { sha256: Sha256Hex, reason: String },
    #[error(
        "module {sha256} imports `{import}`, which workflows may not use: a workflow reaches the outside world only through activities; remove the dependency that pulls it in"
    )]
    ForbiddenImport { sha256: Sha256Hex, import: String },
    #[error(
        "module {sha256} does not fit the weft:workflow world: {reason}; build it against weft-sdk (WIT weft:workflow@0.2.x)"
    )]
    WrongWorld { sha256: Sha256Hex, reason: String },
    #[error(
        "compiling module {sha256} stopped inside the compiler: {reason}; this is a bug in Weft or wasmtime, report it with the module"
    )]
    Compiler { sha256: Sha256Hex, reason: String },
    #[error(
        "module {sha256} is {size} bytes, over the limit of {limit} (EngineConfig::max_module_bytes): build it in release mode, strip its debug info, or raise the limit"
    )]
    TooLarge {
        sha256: Sha256Hex,
        size: usize,
        limit: usize,
    },
}

/// Interfaces a workflow guest may import. Everything here is either Weft's
/// own or virtualised; filesystem is present (with nothing in it) only because
/// Rust's std imports it at startup.
const ALLOWED_IMPORTS: &[&str] = &[
    "weft:workflow/context@0.2.",
    "weft:workflow/types@0.2.",
    "wasi:io/",
    "wasi:clocks/wall-clock@0.2.",
    "wasi:clocks/monotonic-clock@0.2.",
    "wasi:random/",
    "wasi:cli/environment@0.2.",
    "wasi:cli/exit@0.2.",
    "wasi:cli/stdin@0.2.",
    "wasi:cli/stdout@0.2.",
    "wasi:cli/stderr@0.2.",
    "wasi:cli/terminal-",
    "wasi:filesystem/types@0.2.",
    "wasi:filesystem/preopens@0.2.",
];

/// One compiled, linked module, ready to instantiate.
pub struct LoadedModule {
    sha256: Sha256Hex,
    pub(crate) pre: WorkflowPre<GuestState>,
}

impl LoadedModule {
    pub fn sha256(&self) -> &Sha256Hex {
        &self.sha256
    }
}

/// The process-wide engine: compiles, caches and links workflow modules.
pub struct WasmEngine {
    engine: Engine,
    linker: Linker<GuestState>,
    pub(crate) config: EngineConfig,
    modules: Mutex<lru::LruCache<Sha256Hex, Arc<LoadedModule>>>,
    /// Bounds the compilations running at once ([`EngineConfig::max_concurrent_compiles`]).
    compiling: tokio::sync::Semaphore,
    /// The on-disk cache, when configured and usable.
    disk: Option<DiskCache>,
    ticker_stop: Arc<AtomicBool>,
}

impl WasmEngine {
    pub fn new(config: EngineConfig) -> wasmtime::Result<Self> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            // A divergence found by a check names the guest's file and line
            // when the module carries DWARF (build it with debug info).
            .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable);
        if config.pooled_instances > 0 {
            let n = config.pooled_instances;
            let mut pool = PoolingAllocationConfig::default();
            // A Rust wasip2 guest is several core instances and up to two memories.
            pool.total_component_instances(n)
                .total_core_instances(n.saturating_mul(6))
                .total_memories(n.saturating_mul(2))
                .total_tables(n.saturating_mul(4))
                .max_memory_size(config.memory_limit_bytes)
                // One component may not take the pool's share of many: a
                // guest is a few core instances, memories and tables.
                .max_core_instances_per_component(32)
                .max_memories_per_component(4)
                .max_tables_per_component(32)
                // A slot is made ready for its next instance by zeroing the
                // pages the last one touched (found with PAGEMAP_SCAN where
                // the kernel offers it), up to this much, instead of by
                // `madvise`: no page faults when the slot is reused, and no
                // TLB shootdown across the cores for each instance dropped.
                .linear_memory_keep_resident(KEEP_RESIDENT)
                .table_keep_resident(KEEP_RESIDENT)
                .pagemap_scan(Enabled::Auto);
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&wasm)?;
        let mut linker = Linker::new(&engine);
        super::state::add_to_linker(&mut linker)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (weak, stop) = (engine.weak(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("weft-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| wasmtime::Error::msg(format!("cannot start the epoch thread: {e}")))?;

        let disk = config
            .cache_dir
            .as_ref()
            .and_then(|dir| match DiskCache::open(dir) {
                Ok(cache) => Some(cache),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "compiled modules are not cached on disk: {e}");
                    None
                }
            });
        let modules = lru::LruCache::new(
            std::num::NonZeroUsize::new(config.max_loaded_modules.max(1)).expect("at least one"),
        );
        let compiling = tokio::sync::Semaphore::new(config.max_concurrent_compiles.max(1));
        Ok(Self {
            engine,
            linker,
            config,
            modules: Mutex::new(modules),
            compiling,
            disk,
            ticker_stop,
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// [`load`](Self::load) on a blocking thread, for async callers: a
    /// compilation takes long enough to stall the async threads.
    pub async fn load_off_thread(
        self: &Arc<Self>,
        bytes: Vec<u8>,
    ) -> Result<Arc<LoadedModule>, LoadError> {
        let sha256 = Sha256Hex::of(&bytes);
        if let Some(m) = self.loaded(&sha256) {
            return Ok(m);
        }
        let _compiling = self
            .compiling
            .acquire()
            .await
            .expect("the compile semaphore never closes");
        if let Some(m) = self.loaded(&sha256) {
            // Compiled by the one this call waited for.
            return Ok(m);
        }
        let engine = Arc::clone(self);
        tokio::task::spawn_blocking(move || engine.load(&bytes))
            .await
            .unwrap_or_else(|e| {
                Err(LoadError::Compiler {
                    sha256,
                    reason: e.to_string(),
                })
            })
    }

    /// The module with these bytes: from memory, else from the on-disk cache,
    /// else validated and compiled (and then cached).
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<LoadedModule>, LoadError> {
        let sha256 = Sha256Hex::of(bytes);
        if let Some(m) = self.loaded(&sha256) {
            return Ok(m);
        }
        let limit = self.config.max_module_bytes;
        if bytes.len() > limit {
            return Err(LoadError::TooLarge {
                sha256,
                size: bytes.len(),
                limit,
            });
        }
        let component = self.compile(&sha256, bytes)?;
        self.check_imports(&sha256, &component)?;
        let instance_pre =
            self.linker
                .instantiate_pre(&component)
                .map_err(|e| LoadError::WrongWorld {
                    sha256: sha256.clone(),
                    reason: format!("{e:#}"),
                })?;
        let pre = WorkflowPre::new(instance_pre).map_err(|e| LoadError::WrongWorld {
            sha256: sha256.clone(),
            reason: format!("{e:#}"),
        })?;
        let module = Arc::new(LoadedModule {
            sha256: sha256.clone(),
            pre,
        });
        self.modules
            .lock()
            .expect("module map poisoned")
            .put(sha256, module.clone());
        Ok(module)
    }

    /// A module loaded before, if it is still in memory.
    pub fn loaded(&self, sha256: &Sha256Hex) -> Option<Arc<LoadedModule>> {
        self.modules
            .lock()
            .expect("module map poisoned")
            .get(sha256)
            .cloned()
    }

    fn compile(&self, sha256: &Sha256Hex, bytes: &[u8]) -> Result<Component, LoadError> {
        let cached = self.disk.as_ref().map(|disk| {
            let compat = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                self.engine.precompile_compatibility_hash().hash(&mut h);
                h.finish()
            };
            (disk, format!("{sha256}-{compat:016x}.cwasm"))
        });
        if let Some(bytes) = cached.as_ref().and_then(|(disk, name)| disk.read(name)) {
            // SAFETY: these bytes were written by `Component::serialize` of
            // this engine configuration (the name carries its compatibility
            // hash): their tag, checked over these very bytes in memory, is
            // keyed by a secret only this host's cache directory holds.
            match unsafe { Component::deserialize(&self.engine, &bytes) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(module = %sha256, "ignoring unreadable compiled module: {e:#}")
                }
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| LoadError::Invalid {
            sha256: sha256.clone(),
            reason: format!("{e:#}"),
        })?;
        if let Some((disk, name)) = &cached {
            let written = component
                .serialize()
                .map_err(std::io::Error::other)
                .and_then(|bytes| disk.write(name, &bytes));
            if let Err(e) = written {
                tracing::warn!(module = %sha256, "cannot cache the compiled module: {e}");
            }
        }
        Ok(component)
    }

    fn check_imports(&self, sha256: &Sha256Hex, component: &Component) -> Result<(), LoadError> {
        let ty = component.component_type();
        for (name, item) in ty.imports(&self.engine) {
            // The world's `use types.{..}` imports type names: they grant nothing.
            if matches!(item.ty, ComponentItem::Type(_)) {
                continue;
            }
            let allowed = ALLOWED_IMPORTS
                .iter()
                .any(|prefix| name.starts_with(prefix));
            if !allowed || !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
                return Err(LoadError::ForbiddenImport {
                    sha256: sha256.clone(),
                    import: name.to_owned(),
                });
            }
        }
        let exports: Vec<&str> = ty.exports(&self.engine).map(|(n, _)| n).collect();
        for needed in ["start", "deliver", "query"] {
            if !exports.contains(&needed) {
                return Err(LoadError::WrongWorld {
                    sha256: sha256.clone(),
                    reason: format!(
                        "it does not export `{needed}` (it exports: {})",
                        exports.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }
}

impl Drop for WasmEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
