//! Inference off the async runtime: worker threads, each owning one model session (`Session::run` takes
//! `&mut self`), fed by one bounded queue per model, with dynamic micro-batching.
//!
//! A free worker takes the first waiting job, then keeps collecting jobs for up to `batch_wait` (or until
//! `max_batch` images), and runs them as one forward pass: under load, requests share passes and throughput
//! rises; alone, a request waits at most `batch_wait`. Each job is answered through its own oneshot channel.
//! The queue is bounded: a full queue is refused at once ([`PoolError::QueueFull`], 429), never buffered.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hetvis_models::embed::Embedder;
use prometheus::{Histogram, IntGauge};
use tokio::sync::oneshot;

/// What a worker runs: a batch of `n * input_len()` floats in, `n * dim()` floats out.
pub trait BatchModel: Send + 'static {
    fn input_len(&self) -> usize;
    fn dim(&self) -> usize;
    fn embed(&mut self, batch: &[f32]) -> Result<Vec<f32>, String>;
}

impl BatchModel for Embedder {
    fn input_len(&self) -> usize {
        Embedder::input_len(self)
    }

    fn dim(&self) -> usize {
        Embedder::dim(self)
    }

    fn embed(&mut self, batch: &[f32]) -> Result<Vec<f32>, String> {
        Embedder::embed(self, batch).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub workers: usize,
    /// Most images per forward pass (larger jobs are run in chunks of this size).
    pub max_batch: usize,
    pub batch_wait: Duration,
    /// Jobs that may wait; one more is refused.
    pub queue_capacity: usize,
    /// Testing aid: sleep before each forward pass.
    pub delay: Duration,
}

/// Pool instruments, registered by the caller.
#[derive(Clone)]
pub struct PoolMetrics {
    /// Images per forward pass.
    pub batch_size: Histogram,
    /// Jobs waiting in the queue.
    pub queue_depth: IntGauge,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the {0} model's queue is full")]
    QueueFull(&'static str),
    #[error("the {0} model's workers have stopped")]
    Stopped(&'static str),
    #[error("embedding failed: {0}")]
    Embed(String),
}

/// A job's embeddings.
#[derive(Debug)]
pub struct Embedded {
    /// `n * dim` floats, one row per image of the job.
    pub vectors: Vec<f32>,
    /// Images in the batch the job ran in (its own and others').
    pub batch_images: usize,
}

type Reply = oneshot::Sender<Result<Embedded, PoolError>>;

struct Job {
    input: Vec<f32>,
    n: usize,
    reply: Reply,
}

pub struct EmbedPool {
    name: &'static str,
    tx: SyncSender<Job>,
    /// Requests on their way to the queue (decoding), which a gathering worker waits for.
    announced: Arc<AtomicUsize>,
    input_len: usize,
    dim: usize,
    metrics: PoolMetrics,
}

impl EmbedPool {
    /// Starts one worker thread per model (all alike: sessions of one model file).
    pub fn start<M: BatchModel>(
        name: &'static str,
        models: Vec<M>,
        config: PoolConfig,
        metrics: PoolMetrics,
    ) -> std::io::Result<Self> {
        let (input_len, dim) = match models.first() {
            Some(m) => (m.input_len(), m.dim()),
            None => return Err(std::io::Error::other("an embed pool needs a worker")),
        };
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let announced = Arc::new(AtomicUsize::new(0));
        for (i, model) in models.into_iter().enumerate() {
            let (rx, announced) = (rx.clone(), announced.clone());
            let (config, metrics) = (config.clone(), metrics.clone());
            std::thread::Builder::new()
                .name(format!("embed-{name}-{i}"))
                .spawn(move || work(model, &rx, &announced, &config, &metrics))?;
        }
        Ok(Self {
            name,
            tx,
            announced,
            input_len,
            dim,
            metrics,
        })
    }

    pub fn input_len(&self) -> usize {
        self.input_len
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Says a request will be submitted soon (it is being decoded), until the guard is dropped: a worker
    /// gathering a batch waits for announced requests (within `batch_wait`), not for silence.
    pub fn announce(&self) -> Announced {
        self.announced.fetch_add(1, Ordering::AcqRel);
        Announced(self.announced.clone())
    }

    /// Queues `n` preprocessed images, or refuses at once when the queue is full.
    pub fn submit(
        &self,
        input: Vec<f32>,
        n: usize,
    ) -> Result<oneshot::Receiver<Result<Embedded, PoolError>>, PoolError> {
        if n == 0 || input.len() != n * self.input_len {
            return Err(PoolError::Embed(format!(
                "{} floats for {n} images of {} floats",
                input.len(),
                self.input_len
            )));
        }
        let (reply, rx) = oneshot::channel();
        self.metrics.queue_depth.inc();
        match self.tx.try_send(Job { input, n, reply }) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.metrics.queue_depth.dec();
                Err(match e {
                    TrySendError::Full(_) => PoolError::QueueFull(self.name),
                    TrySendError::Disconnected(_) => PoolError::Stopped(self.name),
                })
            }
        }
    }

    /// Embeds `n` preprocessed images (`n * input_len()` floats).
    pub async fn embed(&self, input: Vec<f32>, n: usize) -> Result<Embedded, PoolError> {
        let rx = self.submit(input, n)?;
        rx.await.map_err(|_| PoolError::Stopped(self.name))?
    }
}

/// Guard of [`EmbedPool::announce`].
pub struct Announced(Arc<AtomicUsize>);

impl Drop for Announced {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn work<M: BatchModel>(
    mut model: M,
    rx: &Mutex<Receiver<Job>>,
    announced: &AtomicUsize,
    config: &PoolConfig,
    metrics: &PoolMetrics,
) {
    while let Some(jobs) = next_batch(rx, announced, config, metrics) {
        // Jobs whose requester gave up (timeout, disconnect) are not worth a forward pass.
        let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
        if jobs.is_empty() {
            continue;
        }
        if !config.delay.is_zero() {
            std::thread::sleep(config.delay);
        }
        let images: usize = jobs.iter().map(|j| j.n).sum();
        let mut input = Vec::with_capacity(images * model.input_len());
        for j in &jobs {
            input.extend_from_slice(&j.input);
        }
        match run_chunked(&mut model, &input, config.max_batch, metrics) {
            Ok(out) => {
                let mut rows = out.chunks_exact(model.dim());
                for j in jobs {
                    let vectors: Vec<f32> = rows.by_ref().take(j.n).flatten().copied().collect();
                    let _ = j.reply.send(Ok(Embedded {
                        vectors,
                        batch_images: images,
                    }));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, images, "forward pass failed");
                for j in jobs {
                    let _ = j.reply.send(Err(PoolError::Embed(e.clone())));
                }
            }
        }
    }
}

/// How often a gathering worker looks again while requests are announced but not yet queued.
const POLL: Duration = Duration::from_micros(100);

/// Blocks for the first job, then gathers more: whatever is already queued, then, while requests are
/// announced (being decoded, see [`EmbedPool::announce`]), what arrives until `batch_wait` has passed or
/// `max_batch` images are in. A lone request therefore never waits for the window. `None` once every sender
/// is gone (shutdown).
fn next_batch(
    rx: &Mutex<Receiver<Job>>,
    announced: &AtomicUsize,
    config: &PoolConfig,
    metrics: &PoolMetrics,
) -> Option<Vec<Job>> {
    // One worker gathers at a time; the others wait their turn here.
    let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
    let first = rx.recv().ok()?;
    metrics.queue_depth.dec();
    let deadline = Instant::now() + config.batch_wait;
    let mut images = first.n;
    let mut jobs = vec![first];
    while images < config.max_batch {
        let next = match rx.try_recv() {
            Ok(job) => Some(job),
            Err(TryRecvError::Disconnected) => None,
            Err(TryRecvError::Empty) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || announced.load(Ordering::Acquire) == 0 {
                    None
                } else {
                    match rx.recv_timeout(left.min(POLL)) {
                        Ok(job) => Some(job),
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => None,
                    }
                }
            }
        };
        let Some(job) = next else { break };
        metrics.queue_depth.dec();
        images += job.n;
        jobs.push(job);
    }
    Some(jobs)
}

/// Runs `input` in passes of at most `max_batch` images. A panic inside the model becomes an error so the
/// worker lives on.
fn run_chunked<M: BatchModel>(
    model: &mut M,
    input: &[f32],
    max_batch: usize,
    metrics: &PoolMetrics,
) -> Result<Vec<f32>, String> {
    let per = model.input_len();
    let mut out = Vec::with_capacity(input.len() / per * model.dim());
    for chunk in input.chunks(max_batch.max(1) * per) {
        metrics.batch_size.observe((chunk.len() / per) as f64);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| model.embed(chunk)))
            .map_err(|_| "the model panicked".to_string())??;
        out.extend_from_slice(&result);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::HistogramOpts;

    /// Embeds each image as its first float repeated `DIM` times; can hold its first pass until released,
    /// and panics on NaN input.
    struct Fake {
        batches: Arc<Mutex<Vec<usize>>>,
        started: mpsc::Sender<()>,
        gate: Option<mpsc::Receiver<()>>,
    }

    const IN: usize = 3;
    const DIM: usize = 2;

    impl BatchModel for Fake {
        fn input_len(&self) -> usize {
            IN
        }
        fn dim(&self) -> usize {
            DIM
        }
        fn embed(&mut self, batch: &[f32]) -> Result<Vec<f32>, String> {
            let _ = self.started.send(());
            if let Some(gate) = self.gate.take() {
                let _ = gate.recv();
            }
            assert!(!batch[0].is_nan(), "NaN input");
            self.batches.lock().unwrap().push(batch.len() / IN);
            Ok(batch.chunks(IN).flat_map(|img| [img[0]; DIM]).collect())
        }
    }

    struct Harness {
        pool: EmbedPool,
        batches: Arc<Mutex<Vec<usize>>>,
        started: mpsc::Receiver<()>,
        release: mpsc::Sender<()>,
    }

    fn harness(max_batch: usize, queue_capacity: usize, batch_wait: Duration) -> Harness {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let (started_tx, started) = mpsc::channel();
        let (release, gate) = mpsc::channel();
        let fake = Fake {
            batches: batches.clone(),
            started: started_tx,
            gate: Some(gate),
        };
        let metrics = PoolMetrics {
            batch_size: Histogram::with_opts(HistogramOpts::new("b", "b")).unwrap(),
            queue_depth: IntGauge::new("q", "q").unwrap(),
        };
        let config = PoolConfig {
            workers: 1,
            max_batch,
            batch_wait,
            queue_capacity,
            delay: Duration::ZERO,
        };
        let pool = EmbedPool::start("fake", vec![fake], config, metrics).unwrap();
        Harness {
            pool,
            batches,
            started,
            release,
        }
    }

    fn image(v: f32) -> Vec<f32> {
        vec![v; IN]
    }

    #[tokio::test]
    async fn queued_requests_share_one_forward_pass_and_get_their_own_rows() {
        let h = harness(4, 16, Duration::ZERO);
        let first = h.pool.submit(image(1.0), 1).unwrap();
        h.started.recv().unwrap(); // the worker holds job 1 inside the model
        let rest: Vec<_> = (2..=6)
            .map(|i| h.pool.submit(image(i as f32), 1).unwrap())
            .collect();
        assert_eq!(h.pool.metrics.queue_depth.get(), 5);
        h.release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap().vectors, vec![1.0; DIM]);
        for (i, rx) in (2..=6).zip(rest) {
            let e = rx.await.unwrap().unwrap();
            assert_eq!(e.vectors, vec![i as f32; DIM]);
        }
        // Jobs 2-5 ran as one pass of max_batch; job 6 came next.
        assert_eq!(*h.batches.lock().unwrap(), vec![1, 4, 1]);
        assert_eq!(h.pool.metrics.batch_size.get_sample_count(), 3);
        assert_eq!(h.pool.metrics.queue_depth.get(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_and_the_rest_still_complete() {
        let h = harness(8, 2, Duration::ZERO);
        let a = h.pool.submit(image(1.0), 1).unwrap();
        h.started.recv().unwrap();
        let b = h.pool.submit(image(2.0), 1).unwrap();
        let c = h.pool.submit(image(3.0), 1).unwrap();
        assert!(matches!(
            h.pool.submit(image(4.0), 1),
            Err(PoolError::QueueFull("fake"))
        ));
        h.release.send(()).unwrap();
        for rx in [a, b, c] {
            assert!(rx.await.unwrap().is_ok());
        }
        // A job larger than max_batch runs in chunks and keeps its rows in order.
        let big: Vec<f32> = (0..20).flat_map(|i| image(i as f32)).collect();
        let e = h.pool.embed(big, 20).await.unwrap();
        let firsts: Vec<f32> = e.vectors.chunks(DIM).map(|r| r[0]).collect();
        assert_eq!(firsts, (0..20).map(|i| i as f32).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_worker_waits_for_announced_requests_only() {
        // A window far longer than the test may take: only announced requests are waited for.
        let h = harness(8, 16, Duration::from_secs(3600));
        h.release.send(()).unwrap();
        let lone = tokio::time::timeout(Duration::from_secs(60), h.pool.embed(image(1.0), 1));
        assert!(lone
            .await
            .expect("a lone request waited for the window")
            .is_ok());

        let pending = h.pool.announce();
        let a = h.pool.submit(image(2.0), 1).unwrap();
        // Once the worker has taken `a` off the queue it is gathering, and must wait for the announced one.
        while h.pool.metrics.queue_depth.get() > 0 {
            tokio::task::yield_now().await;
        }
        let b = h.pool.submit(image(3.0), 1).unwrap();
        drop(pending);
        assert_eq!(a.await.unwrap().unwrap().batch_images, 2);
        assert_eq!(b.await.unwrap().unwrap().vectors, vec![3.0; DIM]);
        assert_eq!(*h.batches.lock().unwrap(), vec![1, 2]);
    }

    #[tokio::test]
    async fn a_panicking_model_fails_the_job_but_the_worker_lives_on() {
        let h = harness(8, 4, Duration::ZERO);
        h.release.send(()).unwrap();
        let bad = h.pool.embed(image(f32::NAN), 1).await;
        assert!(matches!(bad, Err(PoolError::Embed(_))), "{bad:?}");
        assert!(h.pool.embed(image(5.0), 1).await.is_ok());
        // Wrongly sized input is refused before it is queued.
        assert!(h.pool.submit(vec![0.0; IN + 1], 1).is_err());
    }
}
