//! Command line: argument parsing and the subcommands, thin over the library.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser, Subcommand};
use tracing::{debug, info, warn};

use crate::config;
use crate::daemon;
use crate::error::{Error, Result};
use crate::firewall::Firewall;
use crate::firewall::iptables::Iptables;
use crate::health;
use crate::model::Family;
use crate::reconcile;
use crate::state;
use crate::status;

/// Dispatcher actions that trigger a reconcile. Everything else returns at once.
pub const RECONCILE_ACTIONS: &[&str] = &[
    "up",
    "down",
    "dhcp4-change",
    "dhcp6-change",
    "reapply",
    "connectivity-change",
    "vpn-up",
    "vpn-down",
];

#[derive(Debug, Parser)]
#[command(
    name = "nm-multiwan",
    version,
    about = "Balance connections over every NetworkManager uplink",
    long_about = "nm-multiwan spreads new connections over all active NetworkManager uplinks \
                  (wired, Wi-Fi, USB tethering...), one uplink per connection, and keeps the \
                  routing tables, policy rules and firewall chains this needs in step with \
                  NetworkManager."
)]
pub struct Cli {
    /// Configuration file; a missing file means defaults.
    #[arg(long, global = true, value_name = "PATH", default_value = config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Reconcile now from NetworkManager's current state.
    Apply,
    /// Called by the NetworkManager dispatcher script; reconciles on up/down events.
    Dispatch {
        /// Interface the event is about (only logged).
        iface: String,
        /// Dispatcher action (up, down, dhcp4-change, ...).
        action: String,
    },
    /// Remove everything nm-multiwan installed, and nothing else.
    Flush,
    /// Show the uplinks in use, with live figures.
    Status {
        /// Machine-readable output (stable, documented in the README).
        #[arg(long)]
        json: bool,
    },
    /// Run in the foreground: follow NetworkManager on D-Bus, probe every uplink and
    /// take uplinks whose upstream is dead out of the balance.
    Daemon {
        /// On SIGTERM/SIGINT remove everything nm-multiwan installed (default: leave
        /// the balanced state in place).
        #[arg(long)]
        flush_on_exit: bool,
    },
    /// Print the desired state without touching anything.
    Plan {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write the man page and shell completions into DIR (for packagers).
    #[command(hide = true)]
    GenerateAssets {
        /// Output directory.
        dir: PathBuf,
    },
}

fn init_logging(cli: &Cli) {
    let level = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("NM_MULTIWAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not for journald or nm-dispatcher.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging(&cli);
    // The daemon probes while it reconciles: it gets two worker threads.
    let runtime = match &cli.command {
        Command::Daemon { .. } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            e.exit_code()
        }
    }
}

/// The configuration for a command that follows NetworkManager: a config file that
/// fails to load never stops it; the last good configuration (or the defaults) is used
/// and the error logged at ERROR level, on every run.
fn following(config_path: &Path, run_dir: &Path) -> config::Loaded {
    let loaded = config::load_or_last_good(config_path, run_dir);
    loaded.log_error();
    loaded
}

/// The exit code of a command that did its job with a fallback configuration: 2 (a
/// bad config file) when the file failed, 0 when it was used.
fn fallback_exit(loaded: &config::Loaded) -> i32 {
    loaded.error.as_ref().map_or(0, Error::exit_code)
}

/// Runs the command; returns its exit code when it did its job.
async fn run(cli: Cli) -> Result<i32> {
    let run_dir = state::run_dir();
    match cli.command {
        Command::Apply => apply(&cli.config, &run_dir, "apply").await,
        Command::Dispatch { iface, action } => {
            if RECONCILE_ACTIONS.contains(&action.as_str()) {
                apply(
                    &cli.config,
                    &run_dir,
                    &format!("dispatcher: {iface} {action}"),
                )
                .await
            } else {
                debug!(iface, action, "dispatcher event ignored");
                Ok(0)
            }
        }
        Command::Flush => {
            // Removes what the last good configuration (and state.json) call ours,
            // whatever the file says now: success whatever the file's state.
            let loaded = following(&cli.config, &run_dir);
            let c = reconcile::flush(&loaded.config, &run_dir).await?;
            info!(
                rules = c.rules_deleted,
                routes = c.routes_deleted,
                sysctls = c.sysctls_restored,
                "flushed"
            );
            Ok(0)
        }
        Command::Status { json } => {
            // Reads only (never keeps a last good configuration: any user may ask), and
            // a broken file is part of the report, at its top, not a failure.
            let loaded = config::load_or_last_good(&cli.config, &run_dir);
            let own_error = status::ConfigErrorReport::from_loaded(&loaded);
            // A running daemon knows the health too; without one, read it ourselves.
            let report = match daemon::query_status(std::time::Duration::from_secs(3)).await {
                Some(mut report) => {
                    // The file as it is now, unless we could not even read it (a user
                    // the file is not readable for): then the daemon's word.
                    if matches!(loaded.error, Some(Error::Config { .. })) {
                        report.config_error = own_error;
                    }
                    report
                }
                None => {
                    let mut report =
                        status::gather(&loaded.config, &health::published_verdicts(&run_dir))
                            .await?;
                    report.config_error = own_error;
                    report
                }
            };
            let text = if json {
                serde_json::to_string_pretty(&report).expect("serialises")
            } else {
                status::render(&report)
            };
            print_stdout(&text).map(|()| 0)
        }
        Command::Plan { json } => {
            let loaded = following(&cli.config, &run_dir);
            let config = &loaded.config;
            let plan = status::current_plan(config, &health::published_verdicts(&run_dir)).await?;
            let text = if json {
                serde_json::to_string_pretty(&plan).expect("serialises")
            } else {
                let firewall6 = plan
                    .firewall6
                    .as_ref()
                    .map(|p6| Iptables::new(Family::V6).render(p6));
                status::render_plan(
                    &plan,
                    &Iptables::default().render(&plan.firewall),
                    firewall6.as_deref(),
                )
            };
            print_stdout(&text)?;
            Ok(fallback_exit(&loaded))
        }
        Command::Daemon { flush_on_exit } => daemon::run(daemon::Options {
            config_path: cli.config.clone(),
            run_dir,
            flush_on_exit,
        })
        .await
        .map(|()| 0),
        Command::GenerateAssets { dir } => generate_assets(&dir).map(|()| 0),
    }
}

/// Reconciles; with a config file that fails, reconciles with the last good
/// configuration all the same (following NetworkManager matters more than the typo),
/// then exits 2 so that the person or script that ran it hears of the file.
async fn apply(config_path: &Path, run_dir: &Path, why: &str) -> Result<i32> {
    let loaded = following(config_path, run_dir);
    if let Err(e) = loaded.keep_as_last_good(run_dir) {
        warn!("cannot keep the configuration as the last good one: {e}");
    }
    // A running daemon's verdicts, so that we reach the result it reaches.
    let health = health::published_verdicts(run_dir);
    let (plan, changes) = reconcile::reconcile(&loaded.config, run_dir, &health).await?;
    reconcile::log_outcome(&why, &plan, &changes, tracing::Level::INFO);
    Ok(fallback_exit(&loaded))
}

/// Results go to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::io("stdout", e)),
        _ => Ok(()),
    }
}

fn generate_assets(dir: &Path) -> Result<()> {
    let io = |what: &str, e| Error::io(format!("{what} in {}", dir.display()), e);
    std::fs::create_dir_all(dir).map_err(|e| io("creating", e))?;
    let cmd = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .map_err(|e| io("rendering man page", e))?;
    std::fs::write(dir.join("nm-multiwan.1"), page).map_err(|e| io("writing man page", e))?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "nm-multiwan", dir)
            .map_err(|e| io("writing completions", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn nonsense_arguments_are_usage_errors() {
        for args in [
            vec!["nm-multiwan"],
            vec!["nm-multiwan", "dispatch", "eth0"],
            vec!["nm-multiwan", "frobnicate"],
            vec!["nm-multiwan", "status", "--jsno"],
            vec!["nm-multiwan", "-v", "-q", "apply"],
            vec!["nm-multiwan", "daemon", "--flush"],
        ] {
            let err = Cli::try_parse_from(&args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
        assert!(Cli::try_parse_from(["nm-multiwan", "dispatch", "$(reboot)", "up"]).is_ok());
        assert!(Cli::try_parse_from(["nm-multiwan", "daemon", "--flush-on-exit"]).is_ok());
    }
}
