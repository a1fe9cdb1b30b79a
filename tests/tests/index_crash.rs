//! kill -9 at random moments of `hetvis-index add`, `remove` and `compact`, and at the write-ahead log's own
//! failure points: afterwards the index always opens, every acknowledged change (the command exited 0) is there,
//! and the change of the killed command is there whole or not at all.
//!
//! Kill times are drawn uniformly over a measured uninterrupted run (from a fixed seed, printed on failure), so
//! they land in start-up, reading, embedding, the log append and its fsync, and a compaction's writes and
//! renames. A `sleep` failpoint between a log append's write and its fsync (test builds only) widens that
//! window, as a slow disk would.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hetvis_indexer::Index;
use hetvis_models::manifest::Role;
use hetvis_tests::fixtures::{self, path_str as s};
use hetvis_tests::{bare_command, run_ok};

const DIM: usize = 32;
/// Random kill points per command.
const KILLS: usize = 12;
const SLOW_FSYNC: &str = "wal-before-sync=sleep(120)";

/// xorshift64*: reproducible kill times.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Rig {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
    idx: PathBuf,
    /// Ids every acknowledged change says are live.
    live: BTreeSet<String>,
    batches: usize,
}

/// A command to run and the change it makes: ids added (`adds`) or removed.
struct Planned {
    args: Vec<String>,
    changed: Vec<String>,
    adds: bool,
}

/// Makes the next command of a kind (each with fresh ids).
type Plan<'a> = dyn FnMut(&mut Rig) -> Planned + 'a;

/// How a command run ended.
#[derive(Debug, PartialEq)]
enum Ended {
    Acknowledged,
    Killed,
}

impl Rig {
    /// An index of 1,500 vectors built from an npy source.
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let model = fixtures::model(&root, "gallery", Role::Gallery, "space-1", 1, DIM);
        let mut rig = Self {
            _tmp: tmp,
            idx: root.join("idx"),
            root,
            model,
            live: BTreeSet::new(),
            batches: 0,
        };
        let (npy, ids) = rig.batch("base", 1500);
        run_ok(
            "hetvis-index",
            &[
                "build",
                "--model",
                s(&rig.model),
                "--source",
                &format!("npy:{}", s(&npy)),
                "--ids",
                s(&ids),
                "--out",
                s(&rig.idx),
                "--no-progress",
            ],
        );
        rig.live.extend((0..1500).map(|i| format!("base/{i}")));
        rig
    }

    /// `n` random vectors with ids `<prefix>/<i>`, as an npy file and its ids file.
    fn batch(&mut self, prefix: &str, n: usize) -> (PathBuf, PathBuf) {
        self.batches += 1;
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ self.batches as u64);
        let data: Vec<f32> = (0..n * DIM).map(|_| rng.unit() as f32 - 0.5).collect();
        let npy = self.root.join(format!("batch-{}.npy", self.batches));
        hetvis_indexer::npy::write(&npy, &data, n, DIM).unwrap();
        let ids = self.root.join(format!("batch-{}.jsonl", self.batches));
        let lines: String = (0..n)
            .map(|i| format!("{{\"id\":\"{prefix}/{i}\"}}\n"))
            .collect();
        std::fs::write(&ids, lines).unwrap();
        (npy, ids)
    }

    fn add_args(&mut self, prefix: &str, n: usize) -> Vec<String> {
        let (npy, ids) = self.batch(prefix, n);
        [
            "add",
            "--index",
            s(&self.idx),
            "--model",
            s(&self.model),
            "--source",
            &format!("npy:{}", s(&npy)),
            "--ids",
            s(&ids),
            "--no-progress",
        ]
        .map(String::from)
        .to_vec()
    }

    fn remove_args(&self, ids: &[String]) -> Vec<String> {
        let mut args = ["remove", "--index", s(&self.idx)]
            .map(String::from)
            .to_vec();
        for id in ids {
            args.extend(["--id".to_owned(), id.clone()]);
        }
        args
    }

    /// Runs `hetvis-index args`, killing it with SIGKILL after `kill_after` unless it ended before.
    fn run(&self, args: &[String], failpoints: &str, kill_after: Duration) -> Ended {
        let mut child = bare_command("hetvis-index")
            .args(args)
            .env("HETVIS_FAILPOINTS", failpoints)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                // An abort failpoint ends it as a kill would; any other failure is a bug.
                if status.success() {
                    return Ended::Acknowledged;
                }
                assert!(err.contains("=abort"), "{args:?} failed ({status}):\n{err}");
                return Ended::Killed;
            }
            if started.elapsed() >= kill_after {
                child.kill().unwrap();
                child.wait().unwrap();
                return Ended::Killed;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// Opens the index as a server would (graph loaded, log replayed), checks it answers, and returns its live ids.
    fn open_live(&self) -> BTreeSet<String> {
        let index =
            Index::open(&self.idx).unwrap_or_else(|e| panic!("the index does not open: {e}"));
        let q = vec![0.1; DIM];
        assert_eq!(
            index.search_hnsw(&q, 5, None).unwrap().len(),
            5.min(index.live_len())
        );
        (0..index.len())
            .filter(|row| !index.removed_rows().contains(row))
            .map(|row| index.records()[row].id.clone())
            .collect()
    }

    /// After a run that changed `changed` ids: all of them when it was acknowledged, all or none otherwise, and
    /// nothing else. Returns whether the change is in.
    fn check(&mut self, what: &str, ended: &Ended, adds: bool, changed: &[String]) -> bool {
        let now = self.open_live();
        let mut with = self.live.clone();
        for id in changed {
            if adds {
                with.insert(id.clone());
            } else {
                with.remove(id);
            }
        }
        let applied = if now == with {
            true
        } else {
            assert_eq!(
                now, self.live,
                "{what} ({ended:?}): the index holds neither all nor none of the change"
            );
            false
        };
        assert!(
            applied || *ended != Ended::Acknowledged,
            "{what}: an acknowledged change is missing"
        );
        if applied {
            self.live = with;
        }
        applied
    }

    /// Median wall time of an uninterrupted run of `args`, for drawing kill times.
    fn duration(&mut self, make: &mut Plan<'_>, failpoints: &str) -> Duration {
        let mut times = Vec::new();
        for _ in 0..3 {
            let Planned {
                args,
                changed,
                adds,
            } = make(self);
            let started = Instant::now();
            let ended = self.run(&args, failpoints, Duration::from_secs(120));
            times.push(started.elapsed());
            assert_eq!(ended, Ended::Acknowledged);
            assert!(self.check("uninterrupted run", &ended, adds, &changed));
        }
        times.sort();
        times[1]
    }

    /// Runs `KILLS` changes, each killed at a random moment; returns how many were killed before they ended.
    fn kill_at_random(
        &mut self,
        what: &str,
        rng: &mut Rng,
        failpoints: &str,
        make: &mut Plan<'_>,
    ) -> usize {
        let typical = self.duration(make, failpoints);
        let (mut killed, mut applied) = (0, 0);
        for k in 0..KILLS {
            let Planned {
                args,
                changed,
                adds,
            } = make(self);
            let at = typical.mul_f64(rng.unit() * 1.1);
            let ended = self.run(&args, failpoints, at);
            let label = format!(
                "{what} #{k} killed after {at:?} of ~{typical:?} (seed {:#x})",
                rng.0
            );
            let applied_now = self.check(&label, &ended, adds, &changed);
            if ended == Ended::Killed {
                killed += 1;
                applied += usize::from(applied_now);
            }
        }
        eprintln!(
            "{what}: {killed} of {KILLS} runs killed before they ended (typical run {typical:?}); {applied} of \
             those had their change in"
        );
        assert!(
            killed >= KILLS / 2,
            "{what}: too few runs were interrupted to test anything"
        );
        killed
    }
}

#[test]
fn kill_9_during_add_remove_and_compaction_loses_no_acknowledged_change() {
    let mut rig = Rig::new();
    let mut rng = Rng(0x5EED_0FC0_FFEE);
    let mut n = 0;

    // Adds of 40 vectors.
    let mut add = |rig: &mut Rig| {
        n += 1;
        let prefix = format!("add-{n}");
        let args = rig.add_args(&prefix, 40);
        let ids = (0..40).map(|i| format!("{prefix}/{i}")).collect();
        Planned {
            args,
            changed: ids,
            adds: true,
        }
    };
    rig.kill_at_random("add", &mut rng, SLOW_FSYNC, &mut add);
    // The log's own failure points: a torn half frame, written but not fsynced, fsynced but not acknowledged.
    for failpoints in [
        "wal-torn-append=error;wal-after-torn-write=abort",
        "wal-before-sync=abort",
        "wal-after-sync=abort",
    ] {
        let Planned {
            args, changed: ids, ..
        } = add(&mut rig);
        let ended = rig.run(&args, failpoints, Duration::from_secs(120));
        assert_eq!(ended, Ended::Killed, "{failpoints}");
        let applied = rig.check(failpoints, &ended, true, &ids);
        // A torn frame is never applied; an fsynced one always is.
        match failpoints {
            "wal-after-sync=abort" => assert!(applied, "{failpoints}"),
            f if f.starts_with("wal-torn") => assert!(!applied, "{failpoints}"),
            _ => {}
        }
    }

    // Removals of 25 live ids.
    let mut remove = |rig: &mut Rig| {
        let ids: Vec<String> = rig.live.iter().step_by(7).take(25).cloned().collect();
        Planned {
            args: rig.remove_args(&ids),
            changed: ids,
            adds: false,
        }
    };
    rig.kill_at_random("remove", &mut rng, SLOW_FSYNC, &mut remove);

    // Compactions (a reclaim: removed rows exist) of an index with a log, killed at random moments.
    let mut compact = |rig: &mut Rig| {
        let Planned {
            args, changed: ids, ..
        } = add(rig);
        assert_eq!(
            rig.run(&args, "", Duration::from_secs(120)),
            Ended::Acknowledged
        );
        assert!(rig.check("add before compaction", &Ended::Acknowledged, true, &ids));
        let Planned {
            args, changed: ids, ..
        } = remove(rig);
        assert_eq!(
            rig.run(&args, "", Duration::from_secs(120)),
            Ended::Acknowledged
        );
        assert!(rig.check(
            "remove before compaction",
            &Ended::Acknowledged,
            false,
            &ids
        ));
        let args = ["compact", "--index", s(&rig.idx)]
            .map(String::from)
            .to_vec();
        // A compaction changes no live id.
        Planned {
            args,
            changed: Vec::new(),
            adds: true,
        }
    };
    rig.kill_at_random("compact", &mut rng, "", &mut compact);

    // The next writer cleans up whatever the killed ones left, and the index still takes changes.
    let Planned {
        args, changed: ids, ..
    } = add(&mut rig);
    assert_eq!(
        rig.run(&args, "", Duration::from_secs(120)),
        Ended::Acknowledged
    );
    assert!(rig.check("final add", &Ended::Acknowledged, true, &ids));
    let leftovers: Vec<String> = std::fs::read_dir(&rig.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("idx."))
        .collect();
    assert_eq!(leftovers, vec!["idx.lock"]);
    let out = run_ok("hetvis-index", &["compact", "--index", s(&rig.idx)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("compacted"));
    assert_eq!(rig.open_live(), rig.live);
}
