//! Signals: [`Signal`], the receiving end [`Context::signal`](crate::Context::signal)
//! returns, and [`Recv`], the future of its next message.

use crate::executor::Shared;
use crate::host::LogLevel;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};

/// The messages of one signal name, as values of type `T`.
///
/// Messages are buffered from the start of the run: one that arrives before
/// anybody waits is kept, and many queue in the order they arrived. Every
/// handle for one name reads the same queue.
///
/// A message whose JSON does not deserialize as `T` was sent by somebody who
/// got the contract wrong; it is dropped with a warning in the run's log
/// rather than failing the workflow.
pub struct Signal<T> {
    shared: Rc<Shared>,
    name: Rc<str>,
    message: PhantomData<fn() -> T>,
}

impl<T> Clone for Signal<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Rc::clone(&self.shared),
            name: Rc::clone(&self.name),
            message: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> Signal<T> {
    pub(crate) fn new(shared: Rc<Shared>, name: &str) -> Self {
        Self {
            shared,
            name: Rc::from(name),
            message: PhantomData,
        }
    }

    /// The signal's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the next message. Dropping the future before it completes
    /// (say, in a lost [`select`](crate::select)) consumes nothing.
    pub fn recv(&self) -> Recv<T> {
        Recv {
            signal: self.clone(),
        }
    }

    /// The next buffered message, if one has arrived; never waits.
    pub fn try_recv(&self) -> Option<T> {
        self.next(None)
    }

    fn next(&self, waker: Option<&Waker>) -> Option<T> {
        loop {
            let message = self.shared.pop_signal(&self.name, waker)?;
            match serde_json::from_str(&message) {
                Ok(value) => return Some(value),
                Err(e) => self.shared.host().log(
                    LogLevel::Warn,
                    &format!(
                        "dropped a message of signal {}: it does not deserialize as {}: {e}; the message was {message}",
                        self.name,
                        std::any::type_name::<T>()
                    ),
                ),
            }
        }
    }
}

/// The next message of a [`Signal`].
#[must_use = "futures do nothing unless awaited"]
pub struct Recv<T> {
    signal: Signal<T>,
}

impl<T: DeserializeOwned> Future for Recv<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<T> {
        match self.signal.next(Some(cx.waker())) {
            Some(value) => Poll::Ready(value),
            None => Poll::Pending,
        }
    }
}
