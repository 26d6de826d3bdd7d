//! [`Cancelled`], the future [`Context::cancelled`](crate::Context::cancelled)
//! returns: how a workflow learns that somebody asked it to cancel.

use crate::executor::Shared;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll};

/// Resolves to the reason of the run's cancel request once one has arrived
/// (at once if one already had). A cancel request does not stop anything by
/// itself: the workflow decides what to do — compensate, then return
/// [`WorkflowError::cancelled`](crate::WorkflowError::cancelled), or ignore it.
///
/// Every `Cancelled` of a run sees the same request; clone it or call
/// [`Context::cancelled`](crate::Context::cancelled) again freely. Dropping it
/// (the loser of a [`select`](crate::select)) has no effect.
#[derive(Clone)]
#[must_use = "futures do nothing unless awaited"]
pub struct Cancelled {
    shared: Rc<Shared>,
}

impl Cancelled {
    pub(crate) fn new(shared: Rc<Shared>) -> Self {
        Self { shared }
    }
}

impl Future for Cancelled {
    type Output = String;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<String> {
        match self.shared.cancel_reason(Some(cx.waker())) {
            Some(reason) => Poll::Ready(reason),
            None => Poll::Pending,
        }
    }
}
