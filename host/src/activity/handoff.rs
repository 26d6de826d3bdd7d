//! Polls of remote workers that wait for tasks, and activations that hand
//! their new tasks straight to them.
//!
//! A poll that found nothing to claim waits in line ([`Handoff::wait`]). An
//! activation that schedules a task one of them serves takes that poll out
//! of the line ([`Handoff::take`]) and writes the task already claimed for
//! its worker, in the commit that schedules it: the task costs no claim of
//! its own, and reaches the worker the moment its scheduling is durable.
//! Only then is it handed over ([`Taken::deliver`]); a commit that fails
//! hands over nothing, and the poll goes back to waiting. So a side effect
//! still never starts before its scheduling is committed.

use crate::store::ActivityTask;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

/// The line of waiting polls.
#[derive(Default)]
pub(crate) struct Handoff {
    next_id: AtomicU64,
    waiting: Mutex<Vec<Waiting>>,
}

struct Waiting {
    id: u64,
    worker_id: String,
    names: Vec<String>,
    room: u32,
    tx: oneshot::Sender<Vec<ActivityTask>>,
}

/// A poll's place in line: where its tasks arrive once an activation took it.
pub(crate) struct Place {
    id: u64,
    rx: oneshot::Receiver<Vec<ActivityTask>>,
}

impl Place {
    /// The tasks handed to this poll, once an activation took it and
    /// committed them (none when that commit failed).
    pub(crate) async fn handed(&mut self) -> Vec<ActivityTask> {
        (&mut self.rx).await.unwrap_or_default()
    }
}

/// A poll taken out of line by an activation, to be handed its tasks once
/// their commit applied.
pub(crate) struct Taken {
    /// Names the worker in the tasks' leases.
    pub(crate) worker_id: String,
    names: Vec<String>,
    /// How many tasks the poll takes at most.
    pub(crate) room: u32,
    tx: oneshot::Sender<Vec<ActivityTask>>,
}

impl Taken {
    /// Whether the worker serves activity `name`.
    pub(crate) fn serves(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// Hands the committed tasks over (none: the commit failed, and the poll
    /// goes back to waiting). A poll whose caller went away meanwhile drops
    /// them: each is attempted again once its lease expires.
    pub(crate) fn deliver(self, tasks: Vec<ActivityTask>) {
        let _ = self.tx.send(tasks);
    }
}

impl Handoff {
    /// Puts a poll of `worker_id` for `names`, taking up to `room` tasks, in line.
    pub(crate) fn wait(&self, worker_id: &str, names: &[String], room: u32) -> Place {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .expect("handoff poisoned")
            .push(Waiting {
                id,
                worker_id: worker_id.to_owned(),
                names: names.to_vec(),
                room: room.max(1),
                tx,
            });
        Place { id, rx }
    }

    /// Takes the poll out of line: the tasks an activation handed it
    /// meanwhile (waiting for that commit when one took it), or none.
    pub(crate) async fn leave(&self, place: &mut Place) -> Vec<ActivityTask> {
        let still_waiting = {
            let mut waiting = self.waiting.lock().expect("handoff poisoned");
            let at = waiting.iter().position(|w| w.id == place.id);
            at.map(|i| waiting.remove(i)).is_some()
        };
        if still_waiting {
            Vec::new()
        } else {
            place.handed().await
        }
    }

    /// Takes the longest-waiting poll that serves one of `names` out of line.
    pub(crate) fn take<'a>(&self, mut names: impl Iterator<Item = &'a str>) -> Option<Taken> {
        let mut waiting = self.waiting.lock().expect("handoff poisoned");
        if waiting.is_empty() {
            return None;
        }
        let i = names.find_map(|name| {
            waiting
                .iter()
                .position(|w| !w.tx.is_closed() && w.names.iter().any(|n| n == name))
        })?;
        let w = waiting.remove(i);
        // Polls whose callers went away leave no trace.
        waiting.retain(|w| !w.tx.is_closed());
        Some(Taken {
            worker_id: w.worker_id,
            names: w.names,
            room: w.room,
            tx: w.tx,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn a_taken_poll_receives_what_is_delivered_and_others_wait_on() {
        let handoff = Handoff::default();
        let mut charge = handoff.wait("w1", &names(&["charge"]), 4);
        let mut ship = handoff.wait("w2", &names(&["ship"]), 1);
        assert!(handoff.take(["email"].into_iter()).is_none());
        let taken = handoff
            .take(["ship", "charge"].into_iter())
            .expect("a poll serves one");
        assert_eq!((taken.worker_id.as_str(), taken.room), ("w2", 1));
        assert!(taken.serves("ship") && !taken.serves("charge"));
        assert!(
            handoff.leave(&mut charge).await.is_empty(),
            "still waiting: nothing was handed to it"
        );
        assert!(
            handoff.take(["charge"].into_iter()).is_none(),
            "it left the line"
        );
        let task = ActivityTask {
            run_id: "r".into(),
            seq: 1,
            name: "ship".into(),
            input: serde_json::Value::Null,
            options: Default::default(),
            attempt: 1,
            lease_token: 1,
            heartbeat_details: None,
            close_deadline_ms: None,
        };
        taken.deliver(vec![task.clone()]);
        assert_eq!(
            handoff.leave(&mut ship).await,
            vec![task],
            "taken: its tasks arrive"
        );
    }

    #[tokio::test]
    async fn a_poll_taken_then_dropped_gets_nothing() {
        let handoff = Handoff::default();
        let mut place = handoff.wait("w1", &names(&["charge"]), 1);
        let taken = handoff.take(["charge"].into_iter()).expect("waiting");
        drop(taken);
        assert!(place.handed().await.is_empty());
        // A poll whose caller went away is never taken.
        let gone = handoff.wait("w2", &names(&["charge"]), 1);
        drop(gone);
        assert!(handoff.take(["charge"].into_iter()).is_none());
    }
}
