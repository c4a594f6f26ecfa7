//! Command line: argument parsing and the subcommands, thin over the library.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser, Subcommand};
use tracing::{debug, info};

use crate::config::{self, Config};
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
    /// Carry several addresses on one wire: COUNT virtual uplinks on IFACE (needs root).
    ///
    /// Keeps COUNT virtual uplinks (macvlan connections named IFACE-v1.., each with its
    /// own stable, locally administered MAC address and its own DHCP lease) on the wired
    /// interface IFACE and brings them up, for networks that give every device an address
    /// and cap each address. Running it again with the same COUNT changes nothing;
    /// another COUNT adds or removes the difference; 0 removes them all. Only connections
    /// it created (marked in their `user.data`) are ever touched.
    #[command(after_help = concat!(
        "At most 8 per interface. Refused with exit code 2, nothing changed: not root, ",
        "an interface NetworkManager does not manage, Wi-Fi, a virtual interface, more ",
        "than 8, a parent without an active connection, a name already taken."
    ))]
    Split {
        /// The wired interface the cable is plugged into, e.g. eth0.
        iface: String,
        /// How many virtual uplinks it should carry besides its own address (0..8).
        count: u32,
    },
    /// Remove the virtual uplinks `split` created on IFACE (needs root).
    ///
    /// The same as `split IFACE 0`: deactivates and deletes every connection `split`
    /// created on IFACE, and nothing else.
    Unsplit {
        /// The interface they sit on.
        iface: String,
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
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            e.exit_code()
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
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
                Ok(())
            }
        }
        Command::Flush => {
            let config = Config::load(&cli.config)?;
            let c = reconcile::flush(&config, &run_dir).await?;
            info!(
                rules = c.rules_deleted,
                routes = c.routes_deleted,
                sysctls = c.sysctls_restored,
                "flushed"
            );
            Ok(())
        }
        Command::Status { json } => {
            // A running daemon knows the health too; without one, read it ourselves.
            let report = match daemon::query_status(std::time::Duration::from_secs(3)).await {
                Some(report) => report,
                None => {
                    let config = Config::load(&cli.config)?;
                    status::gather(&config, &health::published_verdicts(&run_dir)).await?
                }
            };
            let text = if json {
                serde_json::to_string_pretty(&report).expect("serialises")
            } else {
                status::render(&report)
            };
            print_stdout(&text)
        }
        Command::Plan { json } => {
            let config = Config::load(&cli.config)?;
            let plan = status::current_plan(&config, &health::published_verdicts(&run_dir)).await?;
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
            print_stdout(&text)
        }
        Command::Daemon { flush_on_exit } => {
            daemon::run(daemon::Options {
                config_path: cli.config.clone(),
                run_dir,
                flush_on_exit,
            })
            .await
        }
        Command::Split { iface, count } => split(&iface, count).await,
        Command::Unsplit { iface } => split(&iface, 0).await,
        Command::GenerateAssets { dir } => generate_assets(&dir),
    }
}

async fn apply(config_path: &Path, run_dir: &Path, why: &str) -> Result<()> {
    // Config errors stop us before anything in the kernel is touched.
    let config = Config::load(config_path)?;
    // A running daemon's verdicts, so that we reach the result it reaches.
    let health = health::published_verdicts(run_dir);
    let (plan, changes) = reconcile::reconcile(&config, run_dir, &health).await?;
    reconcile::log_outcome(&why, &plan, &changes, tracing::Level::INFO);
    Ok(())
}

async fn split(iface: &str, count: u32) -> Result<()> {
    let report = crate::split::split(iface, count).await?;
    print_stdout(&crate::split::render(&report))
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
            vec!["nm-multiwan", "split", "eth0"],
            vec!["nm-multiwan", "split", "eth0", "-1"],
            vec!["nm-multiwan", "split", "eth0", "three"],
            vec!["nm-multiwan", "unsplit"],
        ] {
            let err = Cli::try_parse_from(&args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
        assert!(Cli::try_parse_from(["nm-multiwan", "dispatch", "$(reboot)", "up"]).is_ok());
        assert!(Cli::try_parse_from(["nm-multiwan", "daemon", "--flush-on-exit"]).is_ok());
        assert!(Cli::try_parse_from(["nm-multiwan", "split", "eth0", "3"]).is_ok());
        assert!(Cli::try_parse_from(["nm-multiwan", "unsplit", "eth0"]).is_ok());
    }
}
