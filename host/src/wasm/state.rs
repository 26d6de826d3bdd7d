//! What a guest instance holds on the host side, and the virtual WASI it sees.
//!
//! The guest's WASI is rebuilt from the run's own data so that it answers the
//! same on replay: the wall clock is the activation's workflow time, the
//! monotonic clock is the same time in nanoseconds, every random source reads
//! one [`RunRng`] seeded from the history, and stdout/stderr are
//! [`GuestOutput`]s that turn lines into log records except while replaying.

use crate::model::{Command, Event, RunId};
use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream, WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::random::{WasiRandom, WasiRandomView};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

/// The per-run values the virtual WASI reads, shared with the instance driver.
#[derive(Debug, Default)]
pub(crate) struct RunClock {
    /// Workflow time of the current activation, ms since the Unix epoch.
    pub(crate) time_ms: AtomicU64,
    pub(crate) replaying: AtomicBool,
}

impl RunClock {
    pub(crate) fn now_ms(&self) -> u64 {
        self.time_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn replaying(&self) -> bool {
        self.replaying.load(Ordering::Relaxed)
    }
}

struct WorkflowWallClock(Arc<RunClock>);

impl HostWallClock for WorkflowWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.now_ms())
    }
}

struct WorkflowMonotonicClock(Arc<RunClock>);

impl HostMonotonicClock for WorkflowMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.0.now_ms().saturating_mul(1_000_000)
    }
}

/// The run's random stream: xoshiro256** seeded by SplitMix64 from the recorded seed.
///
/// Weft owns this generator on purpose: its output is part of every recorded
/// history, so it must never change with a library upgrade.
#[derive(Clone)]
pub(crate) struct RunRng(Arc<Mutex<[u64; 4]>>);

impl RunRng {
    pub(crate) fn new(seed: u64) -> Self {
        let mut sm = seed;
        let mut next = || {
            sm = sm.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        RunRng(Arc::new(Mutex::new([next(), next(), next(), next()])))
    }

    pub(crate) fn next_u64(&self) -> u64 {
        let mut s = self.0.lock().expect("rng poisoned");
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

impl rand_core::TryRng for RunRng {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok((self.next_u64() >> 32) as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(self.next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

/// The log output one guest call may still write: stdout, stderr and the
/// `log` import draw on one budget
/// ([`RunLimits::max_log_bytes_per_activation`](crate::RunLimits)), so a
/// guest printing in a loop costs the host's log a bounded amount per
/// activation, not whatever it prints.
#[derive(Debug)]
pub(crate) struct LogBudget {
    limit: u64,
    used: AtomicU64,
    dropped: AtomicU64,
}

impl LogBudget {
    pub(crate) fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// Whether `bytes` more may be logged in this call; what may not is
    /// counted as dropped.
    pub(crate) fn admit(&self, bytes: usize) -> bool {
        let bytes = bytes as u64;
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) <= self.limit {
            true
        } else {
            self.dropped.fetch_add(bytes, Ordering::Relaxed);
            false
        }
    }

    /// Ends a guest call: the budget is whole again for the next, and a
    /// warning says how much of this one's output was dropped, if any.
    pub(crate) fn settle(&self, run_id: &RunId) {
        self.used.store(0, Ordering::Relaxed);
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(target: "weft::guest", %run_id, dropped_bytes = dropped, "the guest wrote more log output in one activation than the limit of {} bytes (--max-log-bytes-per-activation); {dropped} bytes of it were dropped", self.limit);
        }
    }

    /// Bytes dropped in the current call so far.
    #[cfg(test)]
    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Guest stdout or stderr: complete lines become log records tagged with the
/// run, except while replaying (they were logged the first time), within
/// the call's [`LogBudget`].
#[derive(Clone)]
pub(crate) struct GuestOutput {
    run_id: RunId,
    stream: &'static str,
    clock: Arc<RunClock>,
    budget: Arc<LogBudget>,
    pending: Arc<Mutex<Vec<u8>>>,
}

/// A line longer than this is logged in pieces.
const MAX_LINE: usize = 16 * 1024;

impl GuestOutput {
    fn new(
        run_id: RunId,
        stream: &'static str,
        clock: Arc<RunClock>,
        budget: Arc<LogBudget>,
    ) -> Self {
        Self {
            run_id,
            stream,
            clock,
            budget,
            pending: Arc::default(),
        }
    }

    fn take(&self, bytes: &[u8]) {
        let mut pending = self.pending.lock().expect("output poisoned");
        pending.extend_from_slice(bytes);
        while let Some(end) = pending
            .iter()
            .position(|b| *b == b'\n')
            .or((pending.len() >= MAX_LINE).then_some(MAX_LINE - 1))
        {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if !self.clock.replaying() && self.budget.admit(line.len()) {
                let text = String::from_utf8_lossy(&line);
                tracing::info!(target: "weft::guest", run_id = %self.run_id, stream = self.stream, "{}", text.trim_end());
            }
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.take(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.take(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The host side of one guest instance.
pub(crate) struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    /// What the current guest call may still log.
    pub(crate) log_budget: Arc<LogBudget>,
    pub(crate) run_id: RunId,
    pub(crate) clock: Arc<RunClock>,
    pub(crate) rng: RunRng,
    /// Sequence number the next command gets.
    pub(crate) next_seq: u32,
    /// Commands issued during the current activation.
    pub(crate) commands: Vec<Command>,
    /// While a replay locates divergences: what the activation being replayed
    /// recorded for its commands. `None` in live runs.
    pub(crate) expected: Option<Expected>,
    pub(crate) max_payload_bytes: usize,
    /// What the run may hold ([`crate::limits`]).
    pub(crate) run_limits: crate::limits::RunLimits,
    /// The run's pending work, counted against `run_limits`.
    pub(crate) open: OpenWork,
    /// Epoch ticks left in the current guest call.
    pub(crate) ticks_left: u64,
    /// Who the run is, as `info` tells the guest.
    pub(crate) info: RunInfo,
    /// Change ids whose patch marker is in the recorded history.
    pub(crate) recorded_patches: BTreeSet<String>,
    /// The first answer `patched` gave for each change id; it holds for the run.
    pub(crate) patch_answers: BTreeMap<String, bool>,
}

/// The run's work in flight, by command sequence number: activities
/// scheduled and not resolved, timers started and neither fired nor
/// cancelled, children started and not resolved. Kept from the commands the
/// guest issues and the jobs delivered to it, so a replay counts the same.
#[derive(Clone, Debug, Default)]
pub(crate) struct OpenWork {
    pub(crate) activities: BTreeSet<u32>,
    pub(crate) timers: BTreeSet<u32>,
    pub(crate) children: BTreeSet<u32>,
}

impl OpenWork {
    /// Closes what a delivered job resolves.
    pub(crate) fn resolve(&mut self, job: &crate::model::Job) {
        use crate::model::Job;
        match job {
            Job::ActivityResolved { seq, .. } => {
                self.activities.remove(seq);
            }
            Job::TimerFired { seq } => {
                self.timers.remove(seq);
            }
            Job::ChildResolved { seq, .. } => {
                self.children.remove(seq);
            }
            Job::SignalReceived { .. }
            | Job::UpdateReceived { .. }
            | Job::CancelRequested { .. } => {}
        }
    }
}

/// What a run knows about itself, from its first event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunInfo {
    pub workflow_id: String,
    pub workflow_type: String,
    pub parent_workflow_id: Option<String>,
}

impl GuestState {
    pub(crate) fn new(
        run_id: RunId,
        seed: u64,
        memory_limit_bytes: usize,
        max_payload_bytes: usize,
        run_limits: crate::limits::RunLimits,
    ) -> Self {
        let clock = Arc::new(RunClock::default());
        let rng = RunRng::new(seed);
        let insecure_seed = {
            let r = RunRng::new(seed ^ 0x5EED_5EED_5EED_5EED);
            (u128::from(r.next_u64()) << 64) | u128::from(r.next_u64())
        };
        let log_budget = LogBudget::new(run_limits.max_log_bytes_per_activation);
        let output =
            |stream| GuestOutput::new(run_id.clone(), stream, clock.clone(), log_budget.clone());
        let wasi = WasiCtx::builder()
            .wall_clock(WorkflowWallClock(clock.clone()))
            .monotonic_clock(WorkflowMonotonicClock(clock.clone()))
            .secure_random(rng.clone())
            .insecure_random(rng.clone())
            .insecure_random_seed(insecure_seed)
            .stdout(output("stdout"))
            .stderr(output("stderr"))
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(memory_limit_bytes)
            .trap_on_grow_failure(true)
            .instances(64)
            .build();
        // A guest that opens handles (streams, pollables) without closing
        // them is stopped at this many, not when the host runs out of memory.
        let mut table = ResourceTable::new();
        table.set_max_capacity(run_limits.max_guest_resources);
        Self {
            wasi,
            table,
            limits,
            log_budget,
            run_id,
            clock,
            rng,
            next_seq: 1,
            commands: Vec::new(),
            expected: None,
            max_payload_bytes,
            run_limits,
            open: OpenWork::default(),
            ticks_left: 0,
            info: RunInfo::default(),
            recorded_patches: BTreeSet::new(),
            patch_answers: BTreeMap::new(),
        }
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct HasTable;

impl wasmtime::component::HasData for HasTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// Links Weft's interfaces and the virtual WASI. No sockets, no preopened
/// directories, no environment: see `ALLOWED_IMPORTS` in the engine.
pub(crate) fn add_to_linker(l: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    type T = GuestState;
    super::bindings::Workflow::add_to_linker::<T, HasSelf<T>>(l, |s| s)?;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<T, HasTable>(l, |t| &mut t.table)?;
    wasmtime_wasi_io::bindings::wasi::io::poll::add_to_linker::<T, HasTable>(l, |t| &mut t.table)?;
    wasmtime_wasi_io::bindings::wasi::io::streams::add_to_linker::<T, HasTable>(l, |t| {
        &mut t.table
    })?;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    random::random::add_to_linker::<T, WasiRandom>(l, T::random)?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, T::random)?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, T::random)?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    Ok(())
}

/// The error a guest call ends with when, replaying with
/// [`GuestState::expected`] set, the guest issues a command the history does
/// not record at that point. Its backtrace says where in the guest.
#[derive(Debug, thiserror::Error)]
#[error("the guest issued {} as its command {index} of this activation, where the history records another", issued.kind())]
pub(crate) struct Diverging {
    pub(crate) index: usize,
    pub(crate) issued: Box<Event>,
}

/// The commands an activation recorded, and how many the guest has issued
/// again so far (its `start` and `deliver` calls count together).
#[derive(Debug, Default)]
pub(crate) struct Expected {
    pub(crate) events: Vec<Event>,
    pub(crate) next: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output within the budget is logged; past it, dropped and counted,
    /// until the call settles and the next one has the whole budget.
    #[test]
    fn a_guest_call_logs_at_most_its_budget() {
        let run = RunId("run-1".into());
        let budget = LogBudget::new(100);
        assert!(budget.admit(60));
        assert!(budget.admit(40));
        assert!(!budget.admit(1));
        assert!(!budget.admit(500));
        assert_eq!(budget.dropped(), 501);
        budget.settle(&run);
        assert_eq!(budget.dropped(), 0);
        assert!(budget.admit(100));
        assert!(!budget.admit(1));

        // stdout and stderr draw on the same budget as the `log` import.
        let state = GuestState::new(
            run.clone(),
            1,
            1 << 20,
            1 << 20,
            crate::limits::RunLimits {
                max_log_bytes_per_activation: 10,
                max_guest_resources: 7,
                ..Default::default()
            },
        );
        let out = GuestOutput::new(run, "stdout", state.clock.clone(), state.log_budget.clone());
        out.take(b"123456789\n");
        out.take(b"over the budget\n");
        assert_eq!(state.log_budget.dropped(), 16);
        assert!(!state.log_budget.admit(1));
        // And the instance may hold only so many handles.
        assert_eq!(state.table.max_capacity(), 7);
    }
}
