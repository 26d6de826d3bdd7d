//! [`Saga`]: compensations registered as a workflow makes progress, run in
//! reverse when it has to undo that progress.

use crate::error::WorkflowError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

type Compensation = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<(), WorkflowError>>>>>;

/// A list of compensations: after each step that changed the outside world,
/// [`add`](Self::add) the step that undoes it; if the workflow has to give up,
/// [`compensate`](Self::compensate) runs them, newest first.
///
/// ```
/// # async fn example(ctx: weft_sdk::Context) -> Result<(), weft_sdk::WorkflowError> {
/// use weft_sdk::Saga;
/// let mut saga = Saga::new();
/// let hold: String = ctx.activity("reserve", "order-7").await?;
/// saga.add({
///     let ctx = ctx.clone();
///     move || async move { ctx.activity::<String>("release", &hold).await.map(drop).map_err(Into::into) }
/// });
/// if let Err(error) = ctx.activity::<String>("charge", "order-7").await {
///     saga.compensate().await?;
///     return Err(error.into());
/// }
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct Saga {
    compensations: Vec<Compensation>,
}

impl Saga {
    /// An empty saga.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a compensation. It is called only by
    /// [`compensate`](Self::compensate), never when the saga is dropped.
    pub fn add<F, Fut>(&mut self, compensation: F)
    where
        F: FnOnce() -> Fut + 'static,
        Fut: Future<Output = Result<(), WorkflowError>> + 'static,
    {
        self.compensations
            .push(Box::new(move || Box::pin(compensation())));
    }

    /// How many compensations are registered.
    pub fn len(&self) -> usize {
        self.compensations.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.compensations.is_empty()
    }

    /// Runs the compensations in reverse order of registration, one after
    /// another. A failing one does not stop the rest; the result is the
    /// first failure, or `Ok` when all succeeded.
    pub async fn compensate(mut self) -> Result<(), WorkflowError> {
        let mut first_failure = None;
        while let Some(compensation) = self.compensations.pop() {
            if let Err(error) = compensation().await {
                first_failure.get_or_insert(error);
            }
        }
        first_failure.map_or(Ok(()), Err)
    }
}

impl fmt::Debug for Saga {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Saga")
            .field("compensations", &self.compensations.len())
            .finish()
    }
}
