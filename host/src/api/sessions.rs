//! The web UI's sign-in sessions: the cookie a browser holds is a random
//! session id, never the token it signed in with. The id maps, in this
//! host's memory, to the role the token had; a session ends at sign-out,
//! after [`SESSION_TTL`], or when [`MAX_SESSIONS`] newer ones push it out.
//! A restart ends every session (the browser signs in again).

use super::auth::Role;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session lasts, however busy.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The most sessions kept at once; a new one beyond them ends the oldest.
pub(crate) const MAX_SESSIONS: usize = 1_000;

/// Random bytes in a session id or a form's CSRF value.
const SECRET_BYTES: usize = 32;

struct Session {
    role: Role,
    started: Instant,
}

/// The sessions of this host's web UI.
pub(crate) struct Sessions {
    table: Mutex<HashMap<String, Session>>,
    ttl: Duration,
    max: usize,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(SESSION_TTL, MAX_SESSIONS)
    }
}

impl Sessions {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Self {
            table: Mutex::new(HashMap::new()),
            ttl,
            max: max.max(1),
        }
    }

    /// A new session for `role`: its id, for the cookie.
    pub(crate) fn start(&self, role: Role, now: Instant) -> String {
        let id = secret();
        let mut table = self.table.lock().expect("sessions poisoned");
        table.retain(|_, s| now.saturating_duration_since(s.started) < self.ttl);
        while table.len() >= self.max {
            let oldest = table
                .iter()
                .min_by_key(|(_, s)| s.started)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(oldest) => table.remove(&oldest),
                None => break,
            };
        }
        table.insert(id.clone(), Session { role, started: now });
        id
    }

    /// The role of a live session.
    pub(crate) fn role(&self, id: &str, now: Instant) -> Option<Role> {
        let mut table = self.table.lock().expect("sessions poisoned");
        let session = table.get(id)?;
        if now.saturating_duration_since(session.started) < self.ttl {
            return Some(session.role.clone());
        }
        table.remove(id);
        None
    }

    /// Ends a session (sign-out); an unknown id is no error.
    pub(crate) fn end(&self, id: &str) {
        self.table.lock().expect("sessions poisoned").remove(id);
    }
}

/// 256 random bits from the operating system, as hex: a session id or a
/// sign-in form's CSRF value.
pub(crate) fn secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).expect("the operating system has randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_end_and_make_way() {
        let sessions = Sessions::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        let a = sessions.start(Role::User, t0);
        assert_eq!(a.len(), 64);
        assert_eq!(sessions.role(&a, t0), Some(Role::User));
        assert_eq!(sessions.role("not-a-session", t0), None);
        // The oldest gives way to a third.
        let b = sessions.start(Role::Admin, t0 + Duration::from_secs(1));
        let c = sessions.start(Role::Client, t0 + Duration::from_secs(2));
        assert_ne!(b, c);
        assert_eq!(sessions.role(&a, t0 + Duration::from_secs(2)), None);
        assert_eq!(
            sessions.role(&b, t0 + Duration::from_secs(2)),
            Some(Role::Admin)
        );
        // Sign-out ends one; time ends the rest.
        sessions.end(&b);
        assert_eq!(sessions.role(&b, t0 + Duration::from_secs(2)), None);
        assert_eq!(
            sessions.role(&c, t0 + Duration::from_secs(61)),
            Some(Role::Client)
        );
        assert_eq!(sessions.role(&c, t0 + Duration::from_secs(62)), None);
    }
}
