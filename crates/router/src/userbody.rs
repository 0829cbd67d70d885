//! A user's request body on hyper's path to a replica: cut off past the workload's limit, and
//! what went wrong on the user's side kept, so that a failed exchange is blamed on the replica
//! only when the replica failed (see `UserFault`). The relay does the same with its own copy
//! loop.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::upstream::UserFault;

/// How far a watched body got; shared between the body (in hyper's client) and the request's
/// handler.
#[derive(Debug, Default)]
pub(crate) struct Watch(AtomicU8);

const STREAMING: u8 = 0;
const ENDED: u8 = 1;
const GONE: u8 = 2;
const TOO_LARGE: u8 = 3;

impl Watch {
    /// What the user's side did wrong, if the body was not all sent: `stalled` when the
    /// exchange ran out of time (a body still arriving then is the user's slowness).
    pub(crate) fn fault(&self, timed_out: bool) -> Option<UserFault> {
        match self.0.load(Acquire) {
            GONE => Some(UserFault::Gone),
            TOO_LARGE => Some(UserFault::TooLarge),
            STREAMING if timed_out => Some(UserFault::Stalled),
            _ => None,
        }
    }

    fn set(&self, state: u8) {
        self.0.store(state, Release);
    }
}

/// An `Incoming` body, watched when it is a user's request body.
pub(crate) struct UserBody {
    inner: Incoming,
    /// Bytes the body may still have.
    left: u64,
    watch: Option<Arc<Watch>>,
}

impl UserBody {
    /// A user's request body, allowed `limit` bytes.
    pub(crate) fn watched(inner: Incoming, limit: u64, watch: Arc<Watch>) -> UserBody {
        UserBody { inner, left: limit, watch: Some(watch) }
    }

    /// A body passed on as it is (a replica's answer).
    pub(crate) fn plain(inner: Incoming) -> UserBody {
        UserBody { inner, left: u64::MAX, watch: None }
    }

    fn mark(&self, state: u8) {
        if let Some(w) = &self.watch {
            w.set(state);
        }
    }
}

impl Body for UserBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.left {
                        this.mark(TOO_LARGE);
                        return Poll::Ready(Some(Err("the request's body is larger than the router takes".into())));
                    }
                    this.left -= n;
                }
                // A body of known length may not be polled past its last bytes.
                if this.inner.is_end_stream() {
                    this.mark(ENDED);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                this.mark(GONE);
                Poll::Ready(Some(Err(error.into())))
            }
            None => {
                this.mark(ENDED);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
