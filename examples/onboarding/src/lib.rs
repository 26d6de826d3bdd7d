//! The onboarding example's activities: an in-memory CRM and mailer, and the
//! `send_email`, `profile_complete` and `last_active_ms` activities the
//! `onboarding` workflow calls (`workflow/src/lib.rs`).
//!
//! The mailer stamps each message with the host's clock, so that a test on
//! virtual time (or the demo) can show on which day each e-mail went out.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use weft::{Activities, ActivityContext, ActivityError, Clock};

/// What the CRM knows about one customer.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub complete: bool,
    /// When the customer last did anything, ms since the epoch.
    pub last_active_ms: Option<u64>,
}

/// One e-mail sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Sent {
    pub to: String,
    pub template: String,
    pub at_ms: u64,
}

#[derive(Default)]
struct State {
    profiles: BTreeMap<String, Profile>,
    sent: Vec<Sent>,
}

/// The CRM and the mailer, shared by the activities and whoever watches them.
#[derive(Clone)]
pub struct Services {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
}

impl Services {
    /// Services on `clock` (the host's, so that e-mails carry its time).
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::default(),
            clock,
        }
    }

    pub fn set_profile(&self, customer_id: &str, profile: Profile) {
        self.state
            .lock()
            .expect("services poisoned")
            .profiles
            .insert(customer_id.to_owned(), profile);
    }

    /// Every e-mail sent so far, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.state.lock().expect("services poisoned").sent.clone()
    }

    fn profile(&self, customer_id: &str) -> Result<Profile, ActivityError> {
        self.state
            .lock()
            .expect("services poisoned")
            .profiles
            .get(customer_id)
            .cloned()
            .ok_or_else(|| {
                ActivityError::non_retryable(
                    "UnknownCustomer",
                    format!("the CRM has no customer {customer_id}"),
                )
            })
    }
}

#[derive(Deserialize)]
struct Email {
    to: String,
    template: String,
}

/// The `send_email`, `profile_complete` and `last_active_ms` activities.
pub fn activities(services: &Services) -> Activities {
    let mut a = Activities::new();
    let s = services.clone();
    a.register("send_email", move |ctx: ActivityContext, email: Email| {
        let s = s.clone();
        async move {
            let at_ms = s.clock.now_ms();
            let mut state = s.state.lock().expect("services poisoned");
            state.sent.push(Sent {
                to: email.to,
                template: email.template,
                at_ms,
            });
            Ok::<_, ActivityError>(format!("msg-{}", ctx.idempotency_key()))
        }
    });
    let s = services.clone();
    a.register(
        "profile_complete",
        move |_: ActivityContext, customer: String| {
            let s = s.clone();
            async move { Ok::<_, ActivityError>(s.profile(&customer)?.complete) }
        },
    );
    let s = services.clone();
    a.register(
        "last_active_ms",
        move |_: ActivityContext, customer: String| {
            let s = s.clone();
            async move { Ok::<_, ActivityError>(s.profile(&customer)?.last_active_ms) }
        },
    );
    a
}
