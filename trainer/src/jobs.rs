//! Runs independent training jobs side by side, each in its own child process.
//!
//! On CPU the pipeline's compact models gain nothing from a second libtorch thread (MobileNetV2 x0.4 at 32 px,
//! batch 128: 353 images/s on 2 threads, 368 on 1; two 1-thread runs side by side: 387 each), so two jobs on
//! one thread each finish in half the time of one after the other. Processes rather than threads because
//! libtorch's random generator is per process: seeded jobs stay reproducible however they are scheduled.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Worker processes and libtorch threads for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workers {
    pub count: usize,
    pub threads_each: usize,
}

impl Workers {
    /// `requested` workers (0 = automatic: one on a GPU, which one job keeps busy; one per core up to 4 on
    /// CPU), and the cores shared out between them.
    pub fn new(requested: usize, cuda: bool) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let count = match requested {
            0 if cuda => 1,
            0 => cores.min(4),
            n => n,
        };
        Self {
            count,
            threads_each: (cores / count).max(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("could not start {label}: {message}")]
    Spawn { label: String, message: String },
    #[error("{label} failed ({status}){}; its log: {}", cause.as_ref().map_or(String::new(), |c| format!(": {c}")), log.display())]
    Failed {
        label: String,
        status: String,
        /// The child's own error line (`Error: ...` at a binary's edge), when its log has one.
        cause: Option<String>,
        log: PathBuf,
    },
}

/// Takes the jobs in order with `workers` threads; `work(i, job)` runs job `i`. `done(i)` is called on the
/// calling thread after each job that succeeds. After the first failure no new job starts; the jobs already
/// running finish, and the first error is returned.
pub fn run_pool<J: Send, E: Send>(
    jobs: Vec<J>,
    workers: usize,
    work: impl Fn(usize, J) -> Result<(), E> + Sync,
    mut done: impl FnMut(usize),
) -> Result<(), E> {
    let queue = Mutex::new(jobs.into_iter().enumerate().collect::<VecDeque<_>>());
    let stop = AtomicBool::new(false);
    let mut first_error = None;
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..workers.max(1) {
            let (tx, queue, stop, work) = (tx.clone(), &queue, &stop, &work);
            s.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some((i, job)) = next else { return };
                    let result = work(i, job);
                    if result.is_err() {
                        stop.store(true, Ordering::SeqCst);
                    }
                    if tx.send((i, result)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        for (i, result) in rx {
            match result {
                Ok(()) => done(i),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    });
    first_error.map_or(Ok(()), Err)
}

/// One job as a child process.
pub struct ChildJob {
    pub label: String,
    pub command: Command,
    /// Where the child's stderr (its log) goes.
    pub log: PathBuf,
}

/// Runs the children `workers` at a time, with a bar per running child that shows its latest progress line
/// and an overall bar; `done(i)` after child `i` succeeds (with the bars suspended, so it may print). Each
/// job's start, end and failure are logged as they happen.
pub fn run_children(
    children: Vec<ChildJob>,
    workers: Workers,
    mut done: impl FnMut(usize),
) -> Result<(), JobError> {
    let multi = MultiProgress::new();
    let total = multi.add(ProgressBar::new(children.len() as u64));
    total.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:25}] {pos}/{len} jobs ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    total.set_prefix("pipeline");
    let result = run_pool(
        children,
        workers.count,
        |_, child| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            let label = child.label.clone();
            bar.set_message(format!("{label}: starting"));
            let started = std::time::Instant::now();
            multi.suspend(|| tracing::info!(job = %label, "job started"));
            let r = run_child(child, workers.threads_each, &multi, &bar);
            bar.finish_and_clear();
            multi.remove(&bar);
            let seconds = started.elapsed().as_secs();
            multi.suspend(|| match &r {
                Ok(()) => tracing::info!(job = %label, seconds, "job finished"),
                Err(e) => tracing::error!(job = %label, seconds, "{e}"),
            });
            if r.is_ok() {
                total.inc(1);
            }
            r
        },
        |i| multi.suspend(|| done(i)),
    );
    total.finish();
    result
}

/// Runs one child to completion with `threads` libtorch threads, relaying its progress lines to `bar` and
/// printing its other output.
fn run_child(
    mut child: ChildJob,
    threads: usize,
    multi: &MultiProgress,
    bar: &ProgressBar,
) -> Result<(), JobError> {
    use std::io::Write;
    let spawn_err = |label: &str, e: &dyn std::fmt::Display| JobError::Spawn {
        label: label.to_owned(),
        message: e.to_string(),
    };
    if let Some(dir) = child.log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| spawn_err(&child.label, &e))?;
    }
    // Appended, so a re-run keeps the log of the run that failed or finished before it.
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&child.log)
        .map_err(|e| spawn_err(&child.label, &e))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    writeln!(
        log,
        "=== job {} started (unix time {stamp}) ===",
        child.label
    )
    .map_err(|e| spawn_err(&child.label, &e))?;
    let mut process = child
        .command
        .env(crate::progress::LINES_ENV, "1")
        .env("OMP_NUM_THREADS", threads.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| spawn_err(&child.label, &e))?;
    if let Some(out) = process.stdout.take() {
        // Read to the end whatever the bytes are: a child blocked on a full pipe would never exit.
        let mut reader = BufReader::new(out);
        let mut buf = Vec::new();
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end();
            match crate::progress::relayed(line) {
                Some(text) => bar.set_message(format!("{}: {text}", child.label)),
                None => multi.suspend(|| eprintln!("{}: {line}", child.label)),
            }
            buf.clear();
        }
    }
    let status = process.wait().map_err(|e| spawn_err(&child.label, &e))?;
    if status.success() {
        Ok(())
    } else {
        Err(JobError::Failed {
            label: child.label,
            status: status.to_string(),
            cause: last_error(&child.log),
            log: child.log,
        })
    }
}

/// The last `Error: ...` line of a log (what an `anyhow` main prints on failure), without the prefix. Only this
/// run's part counts: the log is appended across runs, and an older failure is not this one's cause.
fn last_error(log: &Path) -> Option<String> {
    let text = std::fs::read(log).ok()?;
    let text = String::from_utf8_lossy(&text);
    let this_run = text.rsplit("=== job ").next().unwrap_or(&text);
    this_run
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("Error: "))
        .map(|e| e.trim().to_owned())
}

/// The log file of a job that writes into `dir`.
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("job.log")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_job_runs_once_and_concurrently() {
        let running = AtomicUsize::new(0);
        let started = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let mut finished = Vec::new();
        run_pool(
            (0..8).collect(),
            2,
            |i, j: usize| {
                assert_eq!(i, j);
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                started.fetch_add(1, Ordering::SeqCst);
                peak.fetch_max(now, Ordering::SeqCst);
                // The first two jobs wait (up to 10 s) for each other, however loaded the machine is.
                let start = std::time::Instant::now();
                while i < 2
                    && started.load(Ordering::SeqCst) < 2
                    && start.elapsed() < std::time::Duration::from_secs(10)
                {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<(), ()>(())
            },
            |i| finished.push(i),
        )
        .unwrap();
        finished.sort();
        assert_eq!(finished, (0..8).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failure_stops_new_jobs_and_is_returned() {
        let started = AtomicUsize::new(0);
        let err = run_pool(
            (0..10).collect(),
            1,
            |_, j: usize| {
                started.fetch_add(1, Ordering::SeqCst);
                if j == 2 {
                    Err(format!("job {j}"))
                } else {
                    Ok(())
                }
            },
            |_| {},
        );
        assert_eq!(err, Err("job 2".to_owned()));
        assert_eq!(started.load(Ordering::SeqCst), 3);
    }

    /// Runs one child that must fail, on one worker, and returns its error.
    fn run_failing(label: &str, command: Command, log: &Path) -> JobError {
        run_children(
            vec![ChildJob {
                label: label.into(),
                command,
                log: log.to_owned(),
            }],
            Workers {
                count: 1,
                threads_each: 1,
            },
            |_| panic!("a failed job is not done"),
        )
        .unwrap_err()
    }

    #[test]
    fn a_failing_child_names_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", "echo oops >&2; echo 'Error: no gallery' >&2; exit 3"]);
        let log = log_path(dir.path());
        // The log holds an earlier run's failure too (appended); the next test shows that one is never the cause.
        std::fs::write(
            &log,
            "=== job broken started (unix time 0) ===\nError: old\n",
        )
        .unwrap();
        let err = run_failing("broken", command, &log);
        assert!(
            matches!(&err, JobError::Failed { log: l, .. } if *l == log),
            "{err}"
        );
        assert!(std::fs::read_to_string(&log)
            .unwrap()
            .ends_with("oops\nError: no gallery\n"));
        // The parent's error carries the child's, so a failed pipeline says why without opening the log.
        assert!(
            err.to_string().contains("(exit status: 3): no gallery;"),
            "{err}"
        );
    }

    #[test]
    fn a_failing_child_without_an_error_line_is_reported_by_status_alone() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_path(dir.path());
        std::fs::write(&log, "=== job x started (unix time 0) ===\nError: old\n").unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", "exit 4"]);
        let err = run_failing("x", command, &log);
        assert!(
            matches!(&err, JobError::Failed { cause: None, .. }),
            "{err}"
        );
    }

    #[test]
    fn children_run_side_by_side_and_append_to_their_logs() {
        let dir = tempfile::tempdir().unwrap();
        let child = |k: usize| {
            let mut command = Command::new("sh");
            command.args(["-c", &format!("echo job {k} >&2; echo plain output")]);
            ChildJob {
                label: format!("job{k}"),
                command,
                log: log_path(&dir.path().join(format!("j{k}"))),
            }
        };
        for _ in 0..2 {
            let mut done = Vec::new();
            run_children(
                (0..3).map(child).collect(),
                Workers {
                    count: 2,
                    threads_each: 1,
                },
                |i| done.push(i),
            )
            .unwrap();
            done.sort();
            assert_eq!(done, [0, 1, 2]);
        }
        // Both runs are in each log: a re-run does not wipe what the last one wrote.
        let log = std::fs::read_to_string(log_path(&dir.path().join("j1"))).unwrap();
        assert_eq!(log.matches("=== job job1 started").count(), 2, "{log}");
        assert_eq!(log.matches("job 1\n").count(), 2, "{log}");
    }

    #[test]
    fn automatic_workers_use_one_process_on_a_gpu() {
        assert_eq!(Workers::new(0, true).count, 1);
        assert!(Workers::new(0, false).count >= 1);
        assert_eq!(Workers::new(3, false).count, 3);
    }
}
