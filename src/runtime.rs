//! The runtimes connections are served on: with `runtime.worker_threads: N > 1`, N
//! current-thread runtimes, one per thread, instead of one work-stealing runtime.
//!
//! The proxy listener's accept loop runs on the first (the process's own runtime, which
//! also runs the admin API and the state's upkeep) and hands each accepted socket to the
//! runtime with the fewest open proxy connections. The socket is registered with that
//! runtime's I/O driver, so the connection's reads, writes, timers and tasks (its HTTP/2
//! streams, its upstream connections) stay on one thread: no work stealing, no
//! cross-thread wake-up per request. Each runtime has its own upstream pool shard
//! ([`worker_index`] picks it), so the pool's lock is never contended.
//!
//! One listening socket, not one `SO_REUSEPORT` socket per runtime: the kernel's
//! reuseport hash spreads connections without regard to how busy each runtime is, a
//! socket's accept queue is lost when it closes (a runtime could not be stopped alone),
//! and an upgrade would have to hand over N sockets per address. Handing a socket to
//! another runtime costs two `epoll_ctl` calls per connection, not per request.
//!
//! `runtime.work_stealing: true` keeps tokio's multi-thread runtime: one queue of tasks
//! for all threads, which balances better when a few connections carry most of the load
//! (a handful of long uploads), at the price of cross-thread wake-ups on every request.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The runtime this thread serves connections for: 0 on the process's own runtime (and
/// on any thread that is not a worker), `i` on worker `i`.
pub fn worker_index() -> usize {
    INDEX.with(Cell::get)
}

/// How many connection runtimes `worker_threads` asks for (0: one per core), when
/// they are current-thread runtimes; 1 when tokio's work-stealing runtime serves them.
pub fn shards(runtime: &crate::config::Runtime) -> usize {
    if runtime.work_stealing {
        return 1;
    }
    match runtime.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

/// The extra runtimes (workers 1..N) and the open connections of all N.
#[derive(Debug)]
pub struct Workers {
    /// Workers 1..N; worker 0 is the runtime the accept loop runs on.
    handles: Vec<Handle>,
    /// Open proxy connections per runtime, worker 0 first.
    open: Vec<AtomicUsize>,
    /// The same, as `authgate_runtime_connections` gauges.
    gauges: Vec<metrics::Gauge>,
    /// Where the search for the least busy runtime starts, so that ties rotate.
    next: AtomicUsize,
    stop: CancellationToken,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Workers {
    /// Starts `count - 1` threads, each running a current-thread runtime, next to the
    /// caller's (worker 0). `None` when `count` is 1: nothing to spread.
    pub fn start(count: usize) -> std::io::Result<Option<Arc<Workers>>> {
        if count <= 1 {
            return Ok(None);
        }
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(count - 1);
        let mut threads = Vec::with_capacity(count - 1);
        for index in 1..count {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("authgate-rt-{index}"))
                .spawn(move || {
                    INDEX.with(|i| i.set(index));
                    rt.block_on(stop.cancelled());
                })?;
            threads.push(thread);
        }
        Ok(Some(Arc::new(Workers {
            handles,
            open: (0..count).map(|_| AtomicUsize::new(0)).collect(),
            gauges: (0..count)
                .map(crate::metrics::runtime_connections)
                .collect(),
            next: AtomicUsize::new(0),
            stop,
            threads: std::sync::Mutex::new(threads),
        })))
    }

    /// How many runtimes connections are spread over.
    pub fn count(&self) -> usize {
        self.open.len()
    }

    /// The runtime with the fewest open connections (ties taken in turn), counted open
    /// until the returned [`Seat`] is dropped, and the handle to spawn on (`None`: the
    /// caller's own runtime).
    pub fn pick(self: &Arc<Self>) -> (Option<Handle>, Seat) {
        let n = self.open.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let index = (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&i| self.open[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        self.open[index].fetch_add(1, Ordering::Relaxed);
        self.gauges[index].increment(1.0);
        let handle = index.checked_sub(1).map(|i| self.handles[i].clone());
        let seat = Seat {
            workers: self.clone(),
            index,
        };
        (handle, seat)
    }

    /// Stops the worker runtimes (their remaining tasks are dropped) and joins them.
    pub fn stop(&self) {
        self.stop.cancel();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One connection's place on a runtime, given back when the connection ends.
#[derive(Debug)]
pub struct Seat {
    workers: Arc<Workers>,
    index: usize,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.workers.open[self.index].fetch_sub(1, Ordering::Relaxed);
        self.workers.gauges[self.index].decrement(1.0);
    }
}
