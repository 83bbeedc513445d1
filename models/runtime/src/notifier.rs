//! In-process wake-ups for the sync server (spec §1 step 3, §4.4 step 6):
//! "something was appended to this topic at this watermark", and the hook
//! that holds a projection's commit after its sink ran, so that when a
//! subscriber re-reads relative to the commit is chosen, not raced (B11).

use tokio::sync::broadcast;

/// One wake-up on `sync_stream:<topic>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamWake {
    pub topic: String,
    pub watermark: i64,
}

/// A broadcast of wake-ups; cloning shares the channel. Sending with no
/// subscriber is not an error, as with Phoenix PubSub.
#[derive(Clone, Debug)]
pub struct Notifier {
    sender: broadcast::Sender<StreamWake>,
}

impl Notifier {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(4096);
        Notifier { sender }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StreamWake> {
        self.sender.subscribe()
    }

    pub fn wake(&self, wake: StreamWake) {
        let _no_subscriber_is_fine = self.sender.send(wake);
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new()
    }
}

/// Called by the projector after its sink succeeded and before the
/// transaction commits: whatever the hook awaits happens while the
/// projection's writes are still invisible to other connections. The
/// original has no such hook; a harness uses it to hold the commit until
/// the sync server has handled every wake-up sent so far, so a wake-up
/// sent inside the transaction (legacy B11) always meets a journal that
/// does not show the row yet, which in production is a race.
#[async_trait::async_trait]
pub trait CommitHold: Send + Sync + std::fmt::Debug {
    async fn before_commit(&self);
}
