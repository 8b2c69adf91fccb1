//! Stopping a pipeline: a graceful stop (a last checkpoint, sinks flushed) and an abort (give
//! up now). Both are observed by the pipeline loop, by sink calls that are waiting on a service
//! that is down, and by the window operators' emission loops, so a stop always completes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::Notify;

const STOPPING: u8 = 1;
const ABORTED: u8 = 2;

#[derive(Debug, Default)]
struct Inner {
    state: AtomicU8,
    changed: Notify,
}

/// Asks a running pipeline to stop. Clones share one state.
#[derive(Debug, Clone, Default)]
pub struct StopHandle {
    inner: Arc<Inner>,
}

impl StopHandle {
    /// A graceful stop: the pipeline takes a last checkpoint and flushes its sinks; open windows
    /// are not emitted (they are in the checkpoint).
    pub fn stop(&self) {
        self.set(STOPPING);
    }

    /// Gives up at once: no last checkpoint (the previous one stays in force), sink calls in
    /// flight are abandoned, window emission stops at the next window.
    pub fn abort(&self) {
        self.set(ABORTED);
    }

    fn set(&self, to: u8) {
        self.inner.state.fetch_max(to, Ordering::SeqCst);
        self.inner.changed.notify_waiters();
    }

    fn state(&self) -> u8 {
        self.inner.state.load(Ordering::SeqCst)
    }

    pub fn is_stopping(&self) -> bool {
        self.state() >= STOPPING
    }

    pub fn is_aborted(&self) -> bool {
        self.state() >= ABORTED
    }

    async fn reached(&self, at_least: u8) {
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            // Registered before the check: a change between the two is not missed.
            notified.as_mut().enable();
            if self.state() >= at_least {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once a stop (or an abort) has been asked for.
    pub async fn stopping(&self) {
        self.reached(STOPPING).await
    }

    /// Resolves once an abort has been asked for.
    pub async fn aborted(&self) {
        self.reached(ABORTED).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_see_stop_and_abort() {
        let s = StopHandle::default();
        assert!(!s.is_stopping());
        let w = tokio::spawn({
            let s = s.clone();
            async move { s.stopping().await }
        });
        s.stop();
        w.await.unwrap();
        assert!(s.is_stopping() && !s.is_aborted());
        s.abort();
        s.aborted().await;
        // A later stop does not undo an abort.
        s.stop();
        assert!(s.is_aborted());
    }
}
