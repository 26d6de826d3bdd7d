//! Conditions: [`WaitUntil`] and [`WaitUntilTimeout`], the futures of
//! [`Context::wait_until`](crate::Context::wait_until) and
//! [`Context::wait_until_timeout`](crate::Context::wait_until_timeout).
//!
//! A waiting condition registers its predicate with the executor. Whenever a
//! poll round ends with nothing left to run, the executor evaluates every
//! registered predicate (in registration order) and wakes those that hold;
//! so a predicate over state that any future, task, signal or update handler
//! changes is noticed in the same activation, whichever of them runs first.
//!
//! The same check settles a timeout: once the timer of a
//! [`WaitUntilTimeout`] has fired, it does not give up at once but waits for
//! that check, so a predicate made true by a job of the same activation
//! still wins.

use crate::executor::Shared;
use crate::timer::Timer;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll};

/// A predicate over the workflow's own state.
pub(crate) type Predicate = Rc<dyn Fn() -> bool>;

/// A registration with the executor, shared by both futures.
struct Waiting {
    shared: Rc<Shared>,
    predicate: Predicate,
    /// The registration number, while registered.
    id: Option<u64>,
}

impl Waiting {
    fn holds(&mut self) -> bool {
        if !(self.predicate)() {
            return false;
        }
        self.unregister();
        true
    }

    fn register(&mut self, cx: &TaskContext<'_>, expired: bool) {
        self.id = Some(self.shared.register_condition(
            self.id,
            Rc::clone(&self.predicate),
            cx.waker(),
            expired,
        ));
    }

    /// True once the executor found the predicate false after the timeout.
    fn gave_up(&self) -> bool {
        self.id.is_some_and(|id| self.shared.condition_gave_up(id))
    }

    fn unregister(&mut self) {
        if let Some(id) = self.id.take() {
            self.shared.unregister_condition(id);
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// Completes once its predicate holds (at once if it already does).
#[must_use = "futures do nothing unless awaited"]
pub struct WaitUntil {
    waiting: Waiting,
}

impl WaitUntil {
    pub(crate) fn new(shared: Rc<Shared>, predicate: Predicate) -> Self {
        Self {
            waiting: Waiting {
                shared,
                predicate,
                id: None,
            },
        }
    }
}

impl Future for WaitUntil {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let waiting = &mut self.get_mut().waiting;
        if waiting.holds() {
            return Poll::Ready(());
        }
        waiting.register(cx, false);
        Poll::Pending
    }
}

/// Completes with `true` once its predicate holds, or with `false` when the
/// timeout passes first. The durable timer starts only if the predicate does
/// not hold on the first poll, and is cancelled when the predicate wins.
///
/// When the timer fires, the predicate still gets its check at the end of
/// that activation: a signal delivered together with the timer that makes it
/// hold wins.
#[must_use = "futures do nothing unless awaited"]
pub struct WaitUntilTimeout {
    waiting: Waiting,
    /// `None` once it fired, or once the predicate won (dropping it cancels it).
    timer: Option<Timer>,
}

impl WaitUntilTimeout {
    pub(crate) fn new(condition: WaitUntil, timer: Timer) -> Self {
        Self {
            waiting: condition.waiting,
            timer: Some(timer),
        }
    }
}

impl Future for WaitUntilTimeout {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<bool> {
        let this = self.get_mut();
        if this.waiting.holds() {
            this.timer = None;
            return Poll::Ready(true);
        }
        if let Some(timer) = &mut this.timer
            && Pin::new(timer).poll(cx).is_ready()
        {
            this.timer = None;
        }
        let expired = this.timer.is_none();
        if expired && this.waiting.gave_up() {
            this.waiting.unregister();
            return Poll::Ready(false);
        }
        this.waiting.register(cx, expired);
        Poll::Pending
    }
}
