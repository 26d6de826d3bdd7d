//! [`Timer`], the durable sleep [`Context::sleep`](crate::Context::sleep) returns.

use crate::activity::millis;
use crate::executor::Shared;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

/// A durable timer: completes when the host delivers `timer-fired`, which may
/// be after the instance was dropped and rebuilt by replay.
///
/// The `start-timer` command is issued on the first poll. Dropping a timer
/// that was started and has not fired issues `cancel-timer`, so the losing
/// branch of a [`select`](crate::select) leaves nothing behind.
#[must_use = "a timer starts only when its future is awaited"]
pub struct Timer {
    shared: Rc<Shared>,
    duration_ms: u64,
    state: TimerState,
}

#[derive(Clone, Copy)]
enum TimerState {
    Unstarted,
    Started(u32),
    Fired,
}

impl Timer {
    /// A timer of `duration`, rounded up to whole milliseconds.
    pub(crate) fn after(shared: Rc<Shared>, duration: Duration) -> Self {
        let whole = millis(duration);
        let rounded_up = if Duration::from_millis(whole) < duration {
            whole.saturating_add(1)
        } else {
            whole
        };
        Self {
            shared,
            duration_ms: rounded_up,
            state: TimerState::Unstarted,
        }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.get_mut();
        let seq = match this.state {
            TimerState::Fired => return Poll::Ready(()),
            TimerState::Started(seq) => seq,
            TimerState::Unstarted => {
                let seq = this.shared.start_timer(this.duration_ms);
                this.state = TimerState::Started(seq);
                seq
            }
        };
        if this.shared.timer_fired(seq, cx.waker()) {
            this.state = TimerState::Fired;
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let TimerState::Started(seq) = self.state {
            self.shared.drop_timer(seq);
        }
    }
}
