//! Hearth's log lines, handed to the host app.
//!
//! The core logs through the `log` facade. An app that wants those lines
//! implements [`HearthLogger`] (Kotlin: route it to logcat; Swift: to `os_log`) and
//! calls [`set_logger`] once at start-up. Calling it again swaps the logger
//! and the level; the `log` facade itself is installed only once per process.
//!
//! A logger is called on whichever thread made the Hearth call, sometimes
//! while Hearth holds its store lock: it must return quickly, must not call
//! back into Hearth, and must not throw. `log` has no error channel on
//! purpose: a logger that throws anyway makes Rust panic, and the Hearth call
//! it was logging for fails with `HearthError::Internal` (the store stays
//! usable). Lines logged while a panic unwinds are not forwarded.
//!
//! Messages never carry an item id, a title, a category or a timestamp (see
//! `error.rs`), so they may go to the platform's log as they are.

use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use crate::error::HearthError;

/// How important a log line is, most important first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, uniffi::Enum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<log::Level> for LogLevel {
    fn from(level: log::Level) -> Self {
        match level {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        }
    }
}

impl From<LogLevel> for log::LevelFilter {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// Receives Hearth's log lines. Implemented by the app.
#[uniffi::export(foreign)]
pub trait HearthLogger: Send + Sync {
    /// One line. `target` names the part of Hearth that wrote it (for
    /// example `hearth_core::store`).
    fn log(&self, level: LogLevel, target: String, message: String);
}

/// The `log::Log` installed in the process: forwards to the current logger.
struct Forwarder {
    sink: RwLock<Option<Arc<dyn HearthLogger>>>,
}

static FORWARDER: Forwarder = Forwarder { sink: RwLock::new(None) };

/// Whether `log::set_logger` took our forwarder (set on the first call).
static INSTALLED: OnceLock<bool> = OnceLock::new();

impl Forwarder {
    fn current(&self) -> Option<Arc<dyn HearthLogger>> {
        // Cloned out so that no lock is held while the foreign code runs:
        // it may call `set_logger`, or throw (which unwinds through here).
        self.sink.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn replace(&self, logger: Arc<dyn HearthLogger>) {
        *self.sink.write().unwrap_or_else(PoisonError::into_inner) = Some(logger);
    }

    fn forward(&self, record: &log::Record) {
        // A line logged by a destructor while a panic unwinds is dropped: a
        // foreign logger that threw there would be a panic during a panic,
        // which aborts the process.
        if std::thread::panicking() {
            return;
        }
        if let Some(sink) = self.current() {
            sink.log(record.level().into(), record.target().to_string(), record.args().to_string());
        }
    }
}

impl log::Log for Forwarder {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            self.forward(record);
        }
    }

    fn flush(&self) {}
}

/// Sends Hearth's log lines at `max_level` and above to `logger`. Call it
/// again to replace the logger or change the level.
///
/// Fails with `Internal` only if other Rust code in the process installed a
/// `log` logger of its own first (an app that only uses Hearth never sees it).
#[uniffi::export]
pub fn set_logger(logger: Arc<dyn HearthLogger>, max_level: LogLevel) -> Result<(), HearthError> {
    let installed = *INSTALLED.get_or_init(|| log::set_logger(&FORWARDER).is_ok());
    if !installed {
        return Err(HearthError::Internal {
            reason: "another log backend is already installed in this process".into(),
        });
    }
    FORWARDER.replace(logger);
    log::set_max_level(max_level.into());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    const TARGET: &str = "hearth_core::logging::tests";

    /// Keeps the lines written to `TARGET` (other tests of this binary log
    /// through the same process-wide facade).
    #[derive(Default)]
    struct Lines(Mutex<Vec<(LogLevel, String)>>);

    impl HearthLogger for Lines {
        fn log(&self, level: LogLevel, target: String, message: String) {
            if target == TARGET {
                self.0.lock().unwrap().push((level, message));
            }
        }
    }

    impl Lines {
        fn take(&self) -> Vec<(LogLevel, String)> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    /// The logger is process-wide: one test walks through the whole story.
    #[test]
    fn forwards_filters_and_swaps() {
        let first = Arc::new(Lines::default());
        set_logger(first.clone(), LogLevel::Info).unwrap();
        log::info!(target: TARGET, "opened {} rows", 3);
        log::warn!(target: TARGET, "careful");
        log::debug!(target: TARGET, "below the level");
        assert_eq!(
            first.take(),
            vec![(LogLevel::Info, "opened 3 rows".to_string()), (LogLevel::Warn, "careful".to_string())]
        );

        // A second call replaces the logger and the level.
        let second = Arc::new(Lines::default());
        set_logger(second.clone(), LogLevel::Trace).unwrap();
        log::debug!(target: TARGET, "now visible");
        log::trace!(target: TARGET, "and this");
        assert!(first.take().is_empty());
        assert_eq!(
            second.take(),
            vec![(LogLevel::Debug, "now visible".to_string()), (LogLevel::Trace, "and this".to_string())]
        );

        // Raising the level filters again.
        set_logger(second.clone(), LogLevel::Error).unwrap();
        log::warn!(target: TARGET, "filtered");
        log::error!(target: TARGET, "kept");
        assert_eq!(second.take(), vec![(LogLevel::Error, "kept".to_string())]);
    }

    /// A logger may replace itself from inside `log`: no lock is held
    /// while it runs (a held lock would deadlock here).
    #[test]
    fn a_logger_may_replace_itself() {
        struct Swapper {
            forwarder: Arc<Forwarder>,
            next: Arc<Lines>,
        }
        impl HearthLogger for Swapper {
            fn log(&self, _: LogLevel, _: String, _: String) {
                self.forwarder.replace(self.next.clone());
            }
        }
        let forwarder = Arc::new(Forwarder { sink: RwLock::new(None) });
        let next = Arc::new(Lines::default());
        forwarder.replace(Arc::new(Swapper { forwarder: forwarder.clone(), next: next.clone() }));
        let line = |msg: &str| {
            forwarder.forward(
                &log::Record::builder().target(TARGET).level(log::Level::Warn).args(format_args!("{msg}")).build(),
            )
        };
        line("first");
        line("second");
        assert_eq!(next.take(), vec![(LogLevel::Warn, "second".to_string())]);
        // Break the cycle Swapper -> forwarder -> Swapper.
        forwarder.replace(next);
    }

    /// A destructor that logs while a panic unwinds must not reach a logger
    /// that throws: a second panic would abort the process (and this test).
    #[test]
    fn nothing_is_forwarded_while_a_panic_unwinds() {
        struct Broken;
        impl HearthLogger for Broken {
            fn log(&self, _: LogLevel, _: String, _: String) {
                panic!("the app's logger broke");
            }
        }
        struct LogsOnDrop(Arc<Forwarder>);
        impl Drop for LogsOnDrop {
            fn drop(&mut self) {
                let args = format_args!("written on the way out");
                self.0.forward(&log::Record::builder().target(TARGET).level(log::Level::Warn).args(args).build());
            }
        }
        let forwarder = Arc::new(Forwarder { sink: RwLock::new(None) });
        forwarder.replace(Arc::new(Broken));
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = LogsOnDrop(forwarder.clone());
            panic!("a bug while the guard is alive");
        }));
        assert!(unwound.is_err());
    }

    #[test]
    fn levels_map_both_ways() {
        for (level, filter) in [
            (log::Level::Error, log::LevelFilter::Error),
            (log::Level::Warn, log::LevelFilter::Warn),
            (log::Level::Info, log::LevelFilter::Info),
            (log::Level::Debug, log::LevelFilter::Debug),
            (log::Level::Trace, log::LevelFilter::Trace),
        ] {
            assert_eq!(log::LevelFilter::from(LogLevel::from(level)), filter);
        }
        assert!(LogLevel::Error < LogLevel::Trace);
    }
}
