//! Fault injection for crash and timeout tests, compiled in only with the `failpoints` feature (which `make test`
//! turns on and release builds never do); without it every call is a constant no-op.
//!
//! A process reads its failpoints from `HETVIS_FAILPOINTS`, e.g. `after-temp-written=abort` or
//! `decode=sleep(800);fsync-after-rename=error`. Unit tests use [`scoped`], which affects only the calling thread.

use std::time::Duration;

/// The environment variable a process's failpoints are read from.
pub const ENV: &str = "HETVIS_FAILPOINTS";

/// What a failpoint does when reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `abort`: the process dies on the spot, as under `kill -9`.
    Abort,
    /// `sleep(MS)`: the caller is held up, as by a slow disk or a slow decoder.
    Sleep(Duration),
    /// `error`: the caller takes its error path (the call site decides which error).
    Error,
}

impl Action {
    fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        match s {
            "abort" => Some(Action::Abort),
            "error" => Some(Action::Error),
            _ => s
                .strip_prefix("sleep(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|ms| ms.trim().parse().ok())
                .map(|ms| Action::Sleep(Duration::from_millis(ms))),
        }
    }
}

/// The action configured for `name` in a `HETVIS_FAILPOINTS` value.
pub fn lookup(config: &str, name: &str) -> Option<Action> {
    config
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(n, _)| n.trim() == name)
        .and_then(|(_, a)| Action::parse(a))
}

#[cfg(feature = "failpoints")]
mod enabled {
    use std::cell::RefCell;

    use super::{lookup, Action, ENV};

    thread_local! {
        static SCOPED: RefCell<Vec<(String, Action)>> = const { RefCell::new(Vec::new()) };
    }

    pub fn action(name: &str) -> Option<Action> {
        let scoped = SCOPED.with(|s| {
            s.borrow()
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, a)| *a)
        });
        scoped.or_else(|| std::env::var(ENV).ok().and_then(|c| lookup(&c, name)))
    }

    /// Sets a failpoint for the calling thread until the guard is dropped.
    pub struct Scoped(());

    pub fn scoped(name: &str, action: Action) -> Scoped {
        SCOPED.with(|s| s.borrow_mut().push((name.to_owned(), action)));
        Scoped(())
    }

    impl Drop for Scoped {
        fn drop(&mut self) {
            SCOPED.with(|s| s.borrow_mut().pop());
        }
    }
}

#[cfg(feature = "failpoints")]
pub use enabled::{scoped, Scoped};

/// Reaches the failpoint `name`: aborts or sleeps as configured; true when it is set to `error`.
#[cfg(feature = "failpoints")]
pub fn fail(name: &str) -> bool {
    match enabled::action(name) {
        None => false,
        Some(Action::Abort) => {
            eprintln!("{ENV}: {name}=abort");
            std::process::abort();
        }
        Some(Action::Sleep(d)) => {
            std::thread::sleep(d);
            false
        }
        Some(Action::Error) => true,
    }
}

/// Without the `failpoints` feature nothing is injected.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn fail(_name: &str) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_environment_syntax() {
        let c = "after-temp-written=abort; decode = sleep(800);fsync=error;bad=explode";
        assert_eq!(lookup(c, "after-temp-written"), Some(Action::Abort));
        assert_eq!(
            lookup(c, "decode"),
            Some(Action::Sleep(Duration::from_millis(800)))
        );
        assert_eq!(lookup(c, "fsync"), Some(Action::Error));
        assert_eq!(lookup(c, "bad"), None);
        assert_eq!(lookup(c, "missing"), None);
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn scoped_failpoints_affect_only_their_thread_and_scope() {
        assert!(!fail("t-scoped"));
        {
            let _g = scoped("t-scoped", Action::Error);
            assert!(fail("t-scoped"));
            assert!(!std::thread::spawn(|| fail("t-scoped")).join().unwrap());
        }
        assert!(!fail("t-scoped"));
    }
}
