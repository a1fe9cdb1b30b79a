//! A closed-loop HTTP load generator: `concurrency` virtual users, each on its own keep-alive HTTP/1.1
//! connection, send `POST` requests back to back until a request budget or a time budget is spent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;

use crate::stats::quantile;

/// One request's outcome.
#[derive(Debug, Clone)]
pub struct Sample {
    pub latency: Duration,
    pub status: u16,
    /// Which body was sent (index into the bodies).
    pub body: usize,
    /// The response body when the status is 200.
    pub response: Option<Bytes>,
}

#[derive(Debug, Clone)]
pub struct Budget {
    pub requests: usize,
    pub duration: Duration,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Run {
    pub samples: Vec<Sample>,
    pub elapsed: Duration,
}

impl Run {
    pub fn ok(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(|s| s.status == 200)
    }

    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.ok().count() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency quantile of successful requests, in milliseconds.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        let ms: Vec<f64> = self.ok().map(|s| s.latency.as_secs_f64() * 1e3).collect();
        quantile(&ms, q)
    }

    pub fn count_status(&self, status: u16) -> usize {
        self.samples.iter().filter(|s| s.status == status).count()
    }
}

/// Sends `POST path` with the bodies in turn (`content_type`), from `concurrency` connections, until the
/// budget is spent. Only loopback addresses are accepted: this is a benchmark, not a load test of others.
pub async fn run(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    bodies: Arc<Vec<Bytes>>,
    concurrency: usize,
    budget: &Budget,
) -> anyhow::Result<Run> {
    anyhow::ensure!(addr.ip().is_loopback(), "{addr} is not a loopback address");
    anyhow::ensure!(!bodies.is_empty(), "no request bodies");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + budget.duration;
    let mut users = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let (bodies, next) = (bodies.clone(), next.clone());
        let (path, ct, limit) = (path.to_owned(), content_type.to_owned(), budget.requests);
        users.push(tokio::spawn(async move {
            user(addr, &path, &ct, &bodies, &next, limit, deadline).await
        }));
    }
    let mut samples = Vec::new();
    for u in users {
        samples.extend(u.await.context("virtual user panicked")??);
    }
    Ok(Run {
        samples,
        elapsed: started.elapsed(),
    })
}

async fn user(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    bodies: &[Bytes],
    next: &AtomicUsize,
    limit: usize,
    deadline: Instant,
) -> anyhow::Result<Vec<Sample>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut samples = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= limit || Instant::now() >= deadline {
            return Ok(samples);
        }
        let body = i % bodies.len();
        let req = Request::post(path)
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(bodies[body].clone()))?;
        let t = Instant::now();
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        samples.push(Sample {
            latency: t.elapsed(),
            status,
            body,
            response: (status == 200).then_some(bytes),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, status: u16) -> Sample {
        Sample {
            latency: Duration::from_millis(ms),
            status,
            body: 0,
            response: None,
        }
    }

    #[test]
    fn statistics_count_successes_only() {
        let run = Run {
            samples: vec![
                sample(10, 200),
                sample(30, 200),
                sample(1, 429),
                sample(20, 200),
            ],
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(run.throughput(), 1.5);
        assert_eq!(run.latency_ms(0.5), Some(20.0));
        assert_eq!(run.count_status(429), 1);
    }

    #[tokio::test]
    async fn only_loopback_targets_are_accepted() {
        let bodies = Arc::new(vec![Bytes::from_static(b"x")]);
        let budget = Budget {
            requests: 1,
            duration: Duration::from_millis(10),
        };
        let far: SocketAddr = "192.0.2.1:80".parse().unwrap();
        let err = run(far, "/", "image/png", bodies, 1, &budget)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
    }
}
