//! Waiting on several futures at once: [`join`], [`join_all`] and [`select`].
//!
//! They poll their futures in argument order, so the commands a workflow
//! issues (and hence its history) do not depend on anything but the order of
//! the delivered jobs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

/// Waits for both futures; the output is both outputs.
///
/// ```
/// # async fn example(ctx: weft_sdk::Context) -> Result<(), weft_sdk::ActivityError> {
/// let (a, b) = weft_sdk::join(
///     ctx.activity::<String>("fetch", "a"),
///     ctx.activity::<String>("fetch", "b"),
/// )
/// .await;
/// let (a, b) = (a?, b?);
/// # let _ = (a, b); Ok(()) }
/// ```
pub fn join<A: Future, B: Future>(a: A, b: B) -> Join<A, B> {
    Join {
        a: MaybeDone::Running(Box::pin(a)),
        b: MaybeDone::Running(Box::pin(b)),
    }
}

/// Waits for every future; the outputs come in the order of the futures.
pub fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> JoinAll<F> {
    JoinAll {
        futures: futures
            .into_iter()
            .map(|f| MaybeDone::Running(Box::pin(f)))
            .collect(),
    }
}

/// Waits for the first of two futures and drops the other one. When both are
/// ready in the same poll the first argument wins.
///
/// Dropping the loser is what cancels it: a losing [`Timer`](crate::Timer)
/// issues `cancel-timer`, a losing [`ChildWorkflow`](crate::ChildWorkflow)
/// is asked to cancel, a losing signal [`Recv`](crate::Recv) consumes no
/// message. To keep racing a future after it lost, pass it pinned by
/// reference (`select(child.as_mut(), timer)`).
///
/// ```
/// # use std::time::Duration;
/// # async fn example(ctx: weft_sdk::Context) {
/// use weft_sdk::{select, Either};
/// let approval = ctx.signal::<bool>("approve");
/// match select(approval.recv(), ctx.sleep(Duration::from_secs(3600))).await {
///     Either::Left(approved) => ctx.log_info(&format!("approved: {approved}")),
///     Either::Right(()) => ctx.log_warn("nobody answered within an hour"),
/// }
/// # }
/// ```
pub fn select<A: Future, B: Future>(a: A, b: B) -> Select<A, B> {
    Select {
        inner: Some((Box::pin(a), Box::pin(b))),
    }
}

/// The output of [`select`]: which future finished first, and its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Either<L, R> {
    Left(L),
    Right(R),
}

/// The future of [`join`].
#[must_use = "futures do nothing unless awaited"]
pub struct Join<A: Future, B: Future> {
    a: MaybeDone<A>,
    b: MaybeDone<B>,
}

// The futures are boxed and the outputs are never pinned, so moving a `Join`
// is always fine.
impl<A: Future, B: Future> Unpin for Join<A, B> {}

impl<A: Future, B: Future> Future for Join<A, B> {
    type Output = (A::Output, B::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let a_done = this.a.poll(cx);
        let b_done = this.b.poll(cx);
        if a_done && b_done {
            Poll::Ready((this.a.take(), this.b.take()))
        } else {
            Poll::Pending
        }
    }
}

/// The future of [`join_all`].
#[must_use = "futures do nothing unless awaited"]
pub struct JoinAll<F: Future> {
    futures: Vec<MaybeDone<F>>,
}

impl<F: Future> Unpin for JoinAll<F> {}

impl<F: Future> Future for JoinAll<F> {
    type Output = Vec<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut all_done = true;
        for future in &mut this.futures {
            all_done &= future.poll(cx);
        }
        if all_done {
            Poll::Ready(this.futures.iter_mut().map(MaybeDone::take).collect())
        } else {
            Poll::Pending
        }
    }
}

/// The future of [`select`].
#[must_use = "futures do nothing unless awaited"]
pub struct Select<A, B> {
    /// `None` once one of them finished (the other is dropped then).
    inner: Option<Racers<A, B>>,
}

type Racers<A, B> = (Pin<Box<A>>, Pin<Box<B>>);

impl<A: Future, B: Future> Future for Select<A, B> {
    type Output = Either<A::Output, B::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some((a, b)) = this.inner.as_mut() else {
            panic!("weft-sdk: a select was polled after it completed");
        };
        let output = if let Poll::Ready(output) = a.as_mut().poll(cx) {
            Either::Left(output)
        } else if let Poll::Ready(output) = b.as_mut().poll(cx) {
            Either::Right(output)
        } else {
            return Poll::Pending;
        };
        // Drop the loser now, inside this poll, so that its cleanup (a
        // `cancel-timer`) is issued at a deterministic point.
        this.inner = None;
        Poll::Ready(output)
    }
}

enum MaybeDone<F: Future> {
    Running(Pin<Box<F>>),
    Done(F::Output),
    Taken,
}

impl<F: Future> MaybeDone<F> {
    /// Polls the future if it is still running; true once it has an output.
    fn poll(&mut self, cx: &mut TaskContext<'_>) -> bool {
        match self {
            MaybeDone::Running(future) => match future.as_mut().poll(cx) {
                Poll::Ready(output) => {
                    *self = MaybeDone::Done(output);
                    true
                }
                Poll::Pending => false,
            },
            MaybeDone::Done(_) => true,
            MaybeDone::Taken => panic!("weft-sdk: a join was polled after it completed"),
        }
    }

    fn take(&mut self) -> F::Output {
        match std::mem::replace(self, MaybeDone::Taken) {
            MaybeDone::Done(output) => output,
            _ => unreachable!("take is called only once every future is done"),
        }
    }
}
