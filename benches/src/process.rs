//! Services under benchmark, started as child processes on an ephemeral loopback port and stopped when dropped;
//! and the few GET requests a benchmark sends them besides its load.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper::body::Bytes;
use serde_json::Value;

/// A running service; killed when dropped.
pub struct Service {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` and waits for the line `listening on http://ADDR` on its standard output (hetvis-serve and
/// the Python comparison service both print it once bound).
pub fn start(mut command: Command) -> anyhow::Result<Service> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let stdout = child.stdout.take().context("service stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let Some(line) = lines.next() else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{program} exited before listening (see its errors above)");
        };
        if let Some(a) = line?.strip_prefix("listening on http://") {
            break a.trim().parse::<SocketAddr>()?;
        }
    };
    // Keep draining its output so a chatty service never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "{program} listens on {addr}, not loopback"
    );
    Ok(Service { child, addr })
}

/// `GET path` as JSON.
pub fn get_json(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<Value> {
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut s, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(http_body_util::Empty::<Bytes>::new())?;
        let resp = s.send_request(req).await?;
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await?
            .to_bytes();
        serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON"))
    })
}

/// Waits until hetvis-serve's HNSW graph is built, so a benchmark measures the graph and not the exact search
/// the server answers with meanwhile. Returns how long that took.
pub fn wait_for_graph(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let ready = get_json(rt, addr, "/readyz")?;
        match ready["graph"].as_str() {
            // A server on a Milvus collection has no graph of its own: Milvus's index answers at once.
            Some("ready" | "milvus") => return Ok(started.elapsed()),
            Some("failed") => bail!("the server's HNSW graph failed to build: {ready}"),
            _ if started.elapsed() > limit => {
                bail!("the server's HNSW graph was not ready after {limit:?}: {ready}")
            }
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}
