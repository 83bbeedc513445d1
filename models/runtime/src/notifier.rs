//! In-process wake-ups for the sync server (spec §1 step 3, §4.4 step 6):
//! "something was appended to this topic at this watermark".

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
