//! Logging: sentences to stderr (journald picks them up) and, for the agent,
//! to daily rolling files bounded by a retention count.

use std::path::Path;

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

/// Changes the agent's filter at run time (`log.level` on SIGHUP).
type LevelSetter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;
static LEVEL: std::sync::OnceLock<LevelSetter> = std::sync::OnceLock::new();

/// Sets the agent's `log.level` filter while it runs (SIGHUP); `RUST_LOG`,
/// when set, still wins, as at start.
pub fn set_level(level: &str) -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(());
    }
    let filter = EnvFilter::try_new(level)
        .with_context(|| format!("log.level {level:?} is not a valid filter"))?;
    let set = LEVEL
        .get()
        .context("the agent's logging has no reloadable filter")?;
    set(filter).map_err(|e| anyhow::anyhow!(e))
}

/// Keeps the file writer's background thread alive; drop it last.
pub struct LogGuard(#[allow(dead_code)] Option<tracing_appender::non_blocking::WorkerGuard>);

/// Logging for short commands: stderr only, `warn` unless `RUST_LOG` says otherwise.
pub fn init_cli() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Logging for the agent: stderr plus, when `to_files`, `dir/edgeplane.log.YYYY-MM-DD`
/// keeping `retention` files.
pub fn init_agent(
    level: &str,
    dir: &Path,
    to_files: bool,
    retention: usize,
) -> anyhow::Result<LogGuard> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .with_context(|| format!("log.level {level:?} is not a valid filter"))?;
    if !to_files {
        use std::io::IsTerminal;
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter_reloading();
        let handle = builder.reload_handle();
        if builder.try_init().is_ok() {
            let _ = LEVEL.set(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
        }
        return Ok(LogGuard(None));
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("could not create log directory {}", dir.display()))?;
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("edgeplane.log")
        .max_log_files(retention.max(1))
        .build(dir)
        .with_context(|| format!("could not open log files in {}", dir.display()))?;
    let (file, guard) = tracing_appender::non_blocking(appender);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr.and(file))
        .with_filter_reloading();
    let handle = builder.reload_handle();
    if builder.try_init().is_ok() {
        let _ = LEVEL.set(Box::new(move |f| {
            handle.reload(f).map_err(|e| e.to_string())
        }));
    }
    Ok(LogGuard(Some(guard)))
}
