//! Users' connections spread evenly over the router's workers.
//!
//! Every worker accepts on the one listening socket, and the kernel wakes whichever worker's
//! poll sees a new connection first. A client opening its pool (32 connections at once) then
//! lands mostly on one worker, which serves them all on one core while the other core has
//! little to do: measured on two cores, 10 to 20% fewer requests per second than with the
//! connections split evenly, varying from run to run with the split the kernel happened to
//! make. So a worker that serves more than one connection more than the least loaded worker
//! hands a connection it accepts over to that worker (a channel per worker); the connection
//! is then served there for its whole life. A hand-over costs a wake-up of the other worker
//! once per connection, nothing per request.
//!
//! The counts are of connections assigned, raised by the worker that assigns (so a burst of
//! accepts is spread before the receiving worker has run) and lowered when the connection
//! ends.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// A connection handed from the worker that accepted it to the one that serves it.
pub(crate) type Handed = (std::net::TcpStream, SocketAddr);

pub(crate) struct Balance {
    slots: Vec<Slot>,
    /// Each worker's inbox, taken by the worker when it starts.
    inboxes: Mutex<Vec<Option<UnboundedReceiver<Handed>>>>,
    /// Workers still in their accept loop: one that has left it sends nothing more, so a
    /// worker that sees none left and then empties its inbox has every connection handed
    /// to it.
    accepting: AtomicUsize,
}

struct Slot {
    assigned: AtomicUsize,
    inbox: UnboundedSender<Handed>,
}

impl Balance {
    pub(crate) fn new(workers: usize) -> Balance {
        let (slots, inboxes) = (0..workers)
            .map(|_| {
                let (tx, rx) = unbounded_channel();
                (Slot { assigned: AtomicUsize::new(0), inbox: tx }, Some(rx))
            })
            .unzip();
        Balance { slots, inboxes: Mutex::new(inboxes), accepting: AtomicUsize::new(workers) }
    }

    /// Worker `me`'s inbox; once.
    pub(crate) fn inbox(&self, me: usize) -> Option<UnboundedReceiver<Handed>> {
        self.inboxes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_mut(me)?.take()
    }

    /// The worker that serves a connection worker `me` accepted, its count raised: `me`
    /// unless it serves more than one connection more than the least loaded worker.
    pub(crate) fn assign(&self, me: usize) -> usize {
        let mine = self.slots[me].assigned.load(Relaxed);
        let least = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.assigned.load(Relaxed), i))
            .min()
            .filter(|&(n, _)| mine > n + 1)
            .map_or(me, |(_, i)| i);
        self.slots[least].assigned.fetch_add(1, Relaxed);
        least
    }

    /// Counts one more connection on worker `to`, whatever the others serve.
    pub(crate) fn count(&self, to: usize) {
        self.slots[to].assigned.fetch_add(1, Relaxed);
    }

    /// Sends an accepted connection to worker `to`; gives it back if that worker has stopped.
    pub(crate) fn hand(&self, to: usize, handed: Handed) -> Result<(), Handed> {
        self.slots[to].inbox.send(handed).map_err(|e| e.0)
    }

    /// A connection of worker `worker` ended.
    pub(crate) fn ended(&self, worker: usize) {
        self.slots[worker].assigned.fetch_sub(1, Relaxed);
    }

    /// Worker `me` left its accept loop for good.
    pub(crate) fn stop_accepting(&self) {
        self.accepting.fetch_sub(1, AcqRel);
    }

    pub(crate) fn all_stopped_accepting(&self) -> bool {
        self.accepting.load(Acquire) == 0
    }

    /// Connections each worker serves now.
    pub(crate) fn assigned(&self) -> Vec<usize> {
        self.slots.iter().map(|s| s.assigned.load(Relaxed)).collect()
    }
}

/// Keeps a connection counted on its worker until it ends.
pub(crate) struct Assigned {
    pub(crate) balance: Arc<Balance>,
    pub(crate) worker: usize,
}

impl Drop for Assigned {
    fn drop(&mut self) {
        self.balance.ended(self.worker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_accepted_by_one_worker_is_split_evenly() {
        let b = Balance::new(2);
        let served: Vec<usize> = (0..32).map(|_| b.assign(0)).collect();
        assert_eq!(b.assigned(), vec![17, 15]);
        // Worker 0 keeps what it accepts while it is at most one ahead: no hand-over for the
        // first two, then every other one.
        assert_eq!(&served[..4], &[0, 0, 1, 0]);
    }

    #[test]
    fn connections_that_end_make_room_where_they_ended() {
        let b = Balance::new(3);
        for _ in 0..9 {
            b.assign(1);
            let n = b.assigned();
            assert!(n[1] <= n.iter().min().unwrap() + 2, "the accepting worker at most two ahead: {n:?}");
        }
        assert_eq!(b.assigned(), vec![3, 4, 2]);
        for _ in 0..3 {
            b.ended(1);
        }
        // Worker 0 is now more than one ahead of worker 1 only.
        assert_eq!(b.assign(0), 1);
        assert_eq!(b.assign(0), 0);
        assert_eq!(b.assigned(), vec![4, 2, 2]);
    }

    #[test]
    fn one_worker_keeps_everything() {
        let b = Balance::new(1);
        assert!((0..5).all(|_| b.assign(0) == 0));
        assert_eq!(b.assigned(), vec![5]);
    }

    #[test]
    fn a_connection_for_a_stopped_worker_comes_back() {
        let b = Balance::new(2);
        drop(b.inbox(1));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = std::net::TcpStream::connect(addr).unwrap();
        assert!(b.hand(1, (stream, addr)).is_err());
        assert!(b.inbox(1).is_none(), "an inbox is taken once");
    }
}
