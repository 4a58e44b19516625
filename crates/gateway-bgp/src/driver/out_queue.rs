//! The write side of a BGP connection: a bounded queue of encoded messages
//! shared by the driver (which pushes) and the connection's writer task
//! (which pops, writes and, at the end, flushes and shuts down).

use super::*;

/// What is waiting to be written on one connection, shared by the driver
/// (which pushes) and the connection's writer task (which pops).
pub(super) struct OutQueue {
    state: Mutex<OutState>,
    /// Wakes the writer: something pushed, closed or aborted.
    wake: Notify,
    limit: usize,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct OutState {
    messages: VecDeque<Vec<u8>>,
    /// Bytes in `messages` plus the message being written.
    bytes: usize,
    /// Write what is queued, then shut the connection down.
    closing: bool,
    /// Drop what is queued: finish the message under way, write this
    /// NOTIFICATION (if any), and shut down.
    abort: Option<Option<Vec<u8>>>,
}

/// What the writer does next.
enum Next {
    Write(Vec<u8>),
    Wait,
    Finish,
    Abort(Option<Vec<u8>>),
}

#[derive(Debug)]
pub(super) struct QueueFull;

impl OutQueue {
    pub(super) fn new(limit: usize, stats: Arc<Stats>) -> Self {
        Self {
            state: Mutex::new(OutState::default()),
            wake: Notify::new(),
            limit,
            stats,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutState> {
        // The critical sections cannot panic; a poisoned lock still holds
        // consistent counters.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub(super) fn push(&self, bytes: Vec<u8>) -> Result<(), QueueFull> {
        let mut st = self.lock();
        if st.closing || st.abort.is_some() {
            return Ok(());
        }
        if st.bytes + bytes.len() > self.limit {
            return Err(QueueFull);
        }
        st.bytes += bytes.len();
        self.stats
            .queued_bytes
            .fetch_add(bytes.len(), Ordering::Relaxed);
        self.stats.peak_bytes.fetch_max(st.bytes, Ordering::Relaxed);
        st.messages.push_back(bytes);
        drop(st);
        self.wake.notify_one();
        Ok(())
    }

    pub(super) fn close(&self) {
        self.lock().closing = true;
        self.wake.notify_one();
    }

    /// Drops everything queued now (the memory is released here, not when
    /// the writer gets to it); `notification` goes out after the message
    /// being written, if the peer takes it within [`FLUSH_TIMEOUT`].
    pub(super) fn abort(&self, notification: Option<Vec<u8>>) {
        let mut st = self.lock();
        let dropped: usize = st.messages.drain(..).map(|m| m.len()).sum();
        st.bytes -= dropped;
        self.stats
            .queued_bytes
            .fetch_sub(dropped, Ordering::Relaxed);
        if st.abort.is_none() {
            st.abort = Some(notification);
        }
        drop(st);
        self.wake.notify_one();
    }

    fn next(&self) -> Next {
        let mut st = self.lock();
        if let Some(n) = st.abort.as_mut() {
            return Next::Abort(n.take());
        }
        match st.messages.pop_front() {
            Some(m) => Next::Write(m),
            None if st.closing => Next::Finish,
            None => Next::Wait,
        }
    }

    /// `len` bytes popped earlier are written (or given up).
    pub(super) fn done(&self, len: usize) {
        let mut st = self.lock();
        st.bytes -= len;
        self.stats.queued_bytes.fetch_sub(len, Ordering::Relaxed);
    }

    pub(super) fn aborted(&self) -> bool {
        self.lock().abort.is_some()
    }

    pub(super) fn is_closing(&self) -> bool {
        let st = self.lock();
        st.closing || st.abort.is_some()
    }
}

impl Drop for OutQueue {
    fn drop(&mut self) {
        let st = self
            .state
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.stats
            .queued_bytes
            .fetch_sub(st.bytes, Ordering::Relaxed);
    }
}

/// Writes `bytes[*pos..]`, returning early (with `*pos` where it got to)
/// when the queue is aborted.
async fn write_watching(
    wr: &mut OwnedWriteHalf,
    q: &OutQueue,
    bytes: &[u8],
    pos: &mut usize,
) -> std::io::Result<()> {
    while *pos < bytes.len() {
        if q.aborted() {
            return Ok(());
        }
        tokio::select! {
            r = wr.write(&bytes[*pos..]) => match r? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n => *pos += n,
            },
            // Woken by a push (harmless) or an abort (seen at the loop top).
            () = q.wake.notified() => {}
        }
    }
    Ok(())
}

/// The writer task of one connection.
pub(super) async fn write_loop(q: Arc<OutQueue>, mut wr: OwnedWriteHalf) {
    // Once closing, everything left must be out by this deadline.
    let mut deadline: Option<tokio::time::Instant> = None;
    // A message partly written when an abort came: its end goes out
    // before the NOTIFICATION, or the peer would misparse the stream.
    let mut partial: Vec<u8> = Vec::new();
    let result: std::io::Result<()> = async {
        loop {
            if deadline.is_none() && q.is_closing() {
                deadline = Some(tokio::time::Instant::now() + FLUSH_TIMEOUT);
            }
            match q.next() {
                Next::Write(m) => {
                    let mut pos = 0;
                    let r = match deadline {
                        Some(d) => {
                            tokio::time::timeout_at(d, write_watching(&mut wr, &q, &m, &mut pos))
                                .await
                                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
                        }
                        None => write_watching(&mut wr, &q, &m, &mut pos).await,
                    };
                    q.done(m.len());
                    r?;
                    if pos < m.len() {
                        partial = m[pos..].to_vec();
                    }
                }
                Next::Wait => q.wake.notified().await,
                Next::Finish => return Ok(()),
                Next::Abort(notification) => {
                    let d = tokio::time::Instant::now() + FLUSH_TIMEOUT;
                    let mut tail = std::mem::take(&mut partial);
                    tail.extend(notification.unwrap_or_default());
                    return tokio::time::timeout_at(d, wr.write_all(&tail))
                        .await
                        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
                }
            }
        }
    }
    .await;
    if result.is_ok() {
        // Every queued message (a NOTIFICATION last) is out: now FIN.
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, wr.shutdown()).await;
    }
}
