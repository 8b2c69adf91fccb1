//! What skystream's servers (the HTTP API and the SQL endpoint) share against hostile clients:
//!
//! - [`ConnTable`]: the open connections of one endpoint, capped. A connection is *busy* while
//!   it has a request in progress; past the cap, the oldest idle connection is closed to make
//!   room, so a flood of idle connections cannot keep a new client out, and an idle connection
//!   is closed after an idle timeout.
//! - [`AuthLimiter`]: failed logins (a wrong bearer token, a wrong password) per client
//!   address; past a few, the address is locked out for a time that doubles with every further
//!   failure, so guessing runs at a handful of tries a minute instead of thousands a second.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// One open connection of a [`ConnTable`].
#[derive(Debug)]
pub struct Conn {
    id: u64,
    pub peer: IpAddr,
    opened: Instant,
    /// Requests in progress (a response body still streaming counts).
    busy: AtomicUsize,
    /// Milliseconds since `opened` of the last activity.
    last_active_ms: AtomicU64,
    closed: Notify,
    close_requested: std::sync::atomic::AtomicBool,
}

impl Conn {
    /// Marks a request in progress until the guard is dropped.
    pub fn busy(self: &Arc<Self>) -> BusyGuard {
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.touch();
        BusyGuard { conn: self.clone() }
    }

    /// Records activity (resets the idle clock).
    pub fn touch(&self) {
        self.last_active_ms
            .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst) > 0
    }

    /// How long it has been idle (zero while busy).
    pub fn idle_for(&self) -> Duration {
        if self.is_busy() {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }

    /// Asks the connection's task to close it.
    pub fn close(&self) {
        self.close_requested.store(true, Ordering::SeqCst);
        self.closed.notify_waiters();
    }

    /// Resolves when [`Conn::close`] was called, or when the connection has been idle for
    /// `idle_timeout`.
    pub async fn closing(&self, idle_timeout: Duration) {
        loop {
            let notified = self.closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.close_requested.load(Ordering::SeqCst) {
                return;
            }
            let idle = self.idle_for();
            if idle >= idle_timeout {
                return;
            }
            let wait = if self.is_busy() {
                idle_timeout
            } else {
                idle_timeout - idle
            };
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(wait.min(Duration::from_secs(1))) => {}
            }
        }
    }
}

/// See [`Conn::busy`].
#[derive(Debug)]
pub struct BusyGuard {
    conn: Arc<Conn>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.conn.touch();
        self.conn.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The open connections of one endpoint (see the module documentation).
#[derive(Debug)]
pub struct ConnTable {
    max: usize,
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl ConnTable {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            next: AtomicU64::new(1),
            conns: Mutex::new(HashMap::new()),
        })
    }

    /// Admits a connection from `peer`. At the cap, the oldest idle connection is closed to
    /// make room; when every connection is busy, the new one is refused.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admitted, Full> {
        let mut conns = self.conns.lock().unwrap();
        if conns.len() >= self.max {
            let victim = conns
                .values()
                .filter(|c| !c.is_busy() && !c.close_requested.load(Ordering::SeqCst))
                .max_by_key(|c| c.idle_for())
                .cloned();
            match victim {
                Some(v) => {
                    tracing::debug!(peer = %v.peer, "connection cap reached: closing the oldest idle connection");
                    conns.remove(&v.id);
                    v.close();
                }
                None => return Err(Full),
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            peer,
            opened: Instant::now(),
            busy: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            closed: Notify::new(),
            close_requested: Default::default(),
        });
        conns.insert(id, conn.clone());
        Ok(Admitted {
            table: self.clone(),
            conn,
        })
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks every connection to close.
    pub fn close_all(&self) {
        for c in self.conns.lock().unwrap().values() {
            c.close();
        }
    }
}

/// An admitted connection; dropping it takes it out of its table.
#[derive(Debug)]
pub struct Admitted {
    table: Arc<ConnTable>,
    pub conn: Arc<Conn>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table.conns.lock().unwrap().remove(&self.conn.id);
    }
}

/// Failed logins of one address.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct AuthLimiter {
    /// Failures allowed before a lockout.
    free: u32,
    /// The first lockout; each further failure doubles it, up to `max_lockout`.
    lockout: Duration,
    max_lockout: Duration,
    /// Failures are forgotten after this long without one.
    forget_after: Duration,
    by_peer: Mutex<HashMap<IpAddr, Failures>>,
}

/// Addresses an [`AuthLimiter`] remembers at most (the oldest are forgotten first).
const MAX_TRACKED: usize = 10_000;

impl Default for AuthLimiter {
    fn default() -> Self {
        Self::new(5, Duration::from_secs(1), Duration::from_secs(60))
    }
}

impl AuthLimiter {
    pub fn new(free: u32, lockout: Duration, max_lockout: Duration) -> Self {
        Self {
            free,
            lockout,
            max_lockout,
            forget_after: Duration::from_secs(600),
            by_peer: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` while `peer` is locked out.
    pub fn check(&self, peer: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        match self.by_peer.lock().unwrap().get(&peer) {
            Some(Failures {
                locked_until: Some(until),
                ..
            }) if *until > now => Err(*until - now),
            _ => Ok(()),
        }
    }

    /// Records a failed login of `peer`; returns the lockout it now has, if any.
    pub fn failed(&self, peer: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let mut m = self.by_peer.lock().unwrap();
        if m.len() >= MAX_TRACKED
            && !m.contains_key(&peer)
            && let Some(oldest) = m.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k)
        {
            m.remove(&oldest);
        }
        let f = m.entry(peer).or_insert(Failures {
            count: 0,
            last: now,
            locked_until: None,
        });
        if now.duration_since(f.last) > self.forget_after {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        if f.count <= self.free {
            return None;
        }
        let doublings = (f.count - self.free - 1).min(16);
        let lock = self
            .lockout
            .saturating_mul(1 << doublings)
            .min(self.max_lockout);
        f.locked_until = Some(now + lock);
        tracing::warn!(%peer, failures = f.count, "failed logins: locked out for {lock:?}");
        Some(lock)
    }

    /// A successful login forgets the address's failures.
    pub fn succeeded(&self, peer: IpAddr) {
        self.by_peer.lock().unwrap().remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[test]
    fn lockouts_start_after_the_free_failures_and_double() {
        let l = AuthLimiter::new(2, Duration::from_secs(1), Duration::from_secs(8));
        assert_eq!(l.failed(ip(1)), None);
        assert_eq!(l.failed(ip(1)), None);
        assert!(l.check(ip(1)).is_ok());
        assert_eq!(l.failed(ip(1)), Some(Duration::from_secs(1)));
        assert!(l.check(ip(1)).is_err());
        assert!(l.check(ip(2)).is_ok(), "other addresses are not affected");
        assert_eq!(l.failed(ip(1)), Some(Duration::from_secs(2)));
        for _ in 0..10 {
            l.failed(ip(1));
        }
        assert_eq!(l.failed(ip(1)), Some(Duration::from_secs(8)));
        l.succeeded(ip(1));
        assert!(l.check(ip(1)).is_ok());
    }

    #[tokio::test]
    async fn a_full_table_closes_its_oldest_idle_connection() {
        let t = ConnTable::new(2);
        let a = t.admit(ip(1)).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = t.admit(ip(1)).unwrap();
        let _busy = b.conn.busy();
        let c = t.admit(ip(1)).unwrap();
        // `a` was idle the longest: it is asked to close, `b` (busy) is kept.
        a.conn.closing(Duration::from_secs(3600)).await;
        assert_eq!(t.len(), 2);
        // Every connection busy: the next one is refused.
        let _busy_c = c.conn.busy();
        assert_eq!(t.admit(ip(1)).unwrap_err(), Full);
        drop(c);
        assert_eq!(t.len(), 1);
    }

    #[tokio::test]
    async fn idle_connections_close_after_the_idle_timeout() {
        let t = ConnTable::new(4);
        let a = t.admit(ip(1)).unwrap();
        let started = Instant::now();
        a.conn.closing(Duration::from_millis(50)).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
