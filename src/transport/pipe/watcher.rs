//! Who hears about a pipe's (or a pipe listener's) changes besides blocked callers: a reactor,
//! or `wait`, through a [`Notify`] and a token. One announcement per look: after announcing, the
//! next one waits until the owner read, wrote or looked again, so a busy pipe does not flood the
//! reactor's queue, and no change after a look goes unannounced.

use std::sync::Arc;

use crate::transport::Notify;

#[derive(Default)]
pub(super) struct Watcher {
    target: Option<(Arc<dyn Notify>, usize)>,
    announced: bool,
}

impl Watcher {
    /// Watches with `target` (`None`: nobody).
    pub(super) fn set(&mut self, target: Option<(Arc<dyn Notify>, usize)>) {
        self.target = target;
        self.announced = false;
    }

    pub(super) fn is_set(&self) -> bool {
        self.target.is_some()
    }

    /// The owner looked at the state: the next change is announced again.
    pub(super) fn rearm(&mut self) {
        self.announced = false;
    }

    /// Tells the target, unless it was told since it last looked.
    pub(super) fn announce(&mut self) {
        if !self.announced
            && let Some((n, token)) = &self.target
        {
            self.announced = true;
            n.notify(*token);
        }
    }
}
