//! Command line: argument parsing and the subcommands, thin over the library.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use tracing::{debug, error, info, warn};

use crate::config;
use crate::daemon;
use crate::error::{Error, Result};
use crate::health;
use crate::privilege;
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
    /// A live view of the uplinks, refreshed every second (q quits).
    ///
    /// Per uplink its state and health, download and upload rate, tracked connections,
    /// probe RTT and loss (with the daemon running) and the last minute's download; the
    /// total against the best single uplink. Reads a running daemon, or the state
    /// itself without one. Without a terminal (TERM=dumb, or a pipe) it prints one
    /// line per second.
    Top,
    /// Show desktop notifications when an uplink loses or regains its internet, joins
    /// or leaves (run in the desktop session; the packages start it at login).
    Notify,
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
    /// Reconcile again until NetworkManager has settled (started by `dispatch` when a
    /// run had to leave something for later).
    #[command(hide = true)]
    FollowUp,
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
    /// Run a program whose every connection uses one uplink (needs root).
    ///
    /// The program and every child it starts go into a cgroup of ours
    /// (nm-multiwan/via-IFACE under the cgroup2 root), which the firewall sends through
    /// UPLINK: TCP, UDP, both families, no LD_PRELOAD (static binaries too). Should the
    /// uplink go away, their new connections fail rather than leave through another.
    /// Everything else keeps balancing. It runs as root: to run it as another user,
    /// `nm-multiwan run --via UPLINK -- runuser -u USER -- CMD`.
    #[command(
        after_help = "An inactive UPLINK is refused with exit code 2 before the program starts."
    )]
    Run {
        /// The uplink: a NetworkManager connection id or an interface.
        #[arg(long, value_name = "UPLINK")]
        via: String,
        /// The program and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Tell where the next connection to DEST would go now, and why.
    ///
    /// Walks the same ladder the firewall holds: not ours to balance (local, an uplink's
    /// network, a more specific route), the application's choice (a bound source or
    /// device, run --via), the network's (an uplink's name servers), the policies in
    /// order (sticky destinations), then the round and its next slot. The slot needs
    /// root (the firewall's counters).
    Explain {
        /// An address or a host name.
        dest: String,
        /// The destination port.
        port: Option<u16>,
        /// A UDP flow (default: TCP).
        #[arg(long)]
        udp: bool,
        /// The socket's owner, a user name or uid (default: you).
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// The source address the application binds to, or a LAN client's address
        /// (router mode: its connection is forwarded).
        #[arg(long, value_name = "ADDR")]
        from: Option<std::net::IpAddr>,
        /// The device the application binds to (SO_BINDTODEVICE).
        #[arg(long, value_name = "IFACE")]
        device: Option<String>,
        /// As a program started with `run --via UPLINK`.
        #[arg(long, value_name = "UPLINK")]
        via: Option<String>,
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

impl Command {
    /// The command's name as typed, for messages.
    fn name(&self) -> &'static str {
        match self {
            Command::Apply => "apply",
            Command::Dispatch { .. } => "dispatch",
            Command::Flush => "flush",
            Command::Status { .. } => "status",
            Command::Top => "top",
            Command::Notify => "notify",
            Command::Daemon { .. } => "daemon",
            Command::Plan { .. } => "plan",
            Command::FollowUp => "follow-up",
            Command::Split { .. } => "split",
            Command::Unsplit { .. } => "unsplit",
            Command::Run { .. } => "run",
            Command::Explain { .. } => "explain",
            Command::GenerateAssets { .. } => "generate-assets",
        }
    }

    /// Whether this invocation may write the kernel's network configuration (and so
    /// needs `CAP_NET_ADMIN`). A dispatcher event we ignore writes nothing.
    pub fn changes_the_network(&self) -> bool {
        match self {
            Command::Apply
            | Command::Flush
            | Command::Daemon { .. }
            | Command::FollowUp
            | Command::Split { .. }
            | Command::Unsplit { .. }
            | Command::Run { .. } => true,
            Command::Dispatch { action, .. } => RECONCILE_ACTIONS.contains(&action.as_str()),
            Command::Status { .. }
            | Command::Top
            | Command::Notify
            | Command::Plan { .. }
            | Command::Explain { .. }
            | Command::GenerateAssets { .. } => false,
        }
    }
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
    // Before anything is read or locked: without the capability every later step
    // would fail on its own, less clearly.
    if cli.command.changes_the_network() {
        privilege::require_net_admin(cli.command.name())?;
    }
    let run_dir = state::run_dir();
    match cli.command {
        Command::Apply => apply(&cli.config, &run_dir, "apply")
            .await
            .map(|(code, _)| code),
        Command::Dispatch {
            ref iface,
            ref action,
        } => {
            if RECONCILE_ACTIONS.contains(&action.as_str()) {
                let why = format!("dispatcher: {iface} {action}");
                let (code, settled) = apply(&cli.config, &run_dir, &why).await?;
                if !settled {
                    spawn_follow_up(&cli.config);
                }
                Ok(code)
            } else {
                debug!(iface, action, "dispatcher event ignored");
                Ok(0)
            }
        }
        Command::FollowUp => follow_up(&cli.config, &run_dir).await.map(|()| 0),
        Command::Flush => {
            // Removes what the last good configuration (and state.json) call ours,
            // whatever the file says now: success whatever the file's state.
            let loaded = following(&cli.config, &run_dir);
            let done = reconcile::flush(&loaded.config, &run_dir).await?;
            let done: Vec<String> = done.iter().map(|c| c.to_string()).collect();
            info!(changes = ?done, "flushed");
            Ok(0)
        }
        Command::Status { json } => {
            // Reads only (never keeps a last good configuration: any user may ask), and
            // a broken file is part of the report, at its top, not a failure.
            let loaded = config::load_or_last_good(&cli.config, &run_dir);
            let own_error = status::ConfigErrorReport::from_loaded(&loaded);
            // A running daemon knows the health too; without one, read it ourselves.
            let report = match daemon::query_status(daemon::STATUS_QUERY_TIMEOUT).await {
                Ok(Some(mut report)) => {
                    // The file as it is now, unless we could not even read it (a user
                    // the file is not readable for): then the daemon's word.
                    if matches!(loaded.error, Some(Error::Config { .. })) {
                        report.config_error = own_error;
                    }
                    report
                }
                Ok(None) => {
                    let mut report =
                        status::gather(&loaded.config, &health::published_verdicts(&run_dir))
                            .await?;
                    // A file that fails to load, else one the facts refuse.
                    if own_error.is_some() {
                        report.config_error = own_error;
                    }
                    report
                }
                Err(e) => return Err(e),
            };
            let text = if json {
                serde_json::to_string_pretty(&report).expect("serialises")
            } else {
                status::render(&report)
            };
            print_stdout(&text).map(|()| 0)
        }
        Command::Top => {
            // Reads only, like status: a broken file is shown, not a failure.
            let loaded = config::load_or_last_good(&cli.config, &run_dir);
            crate::top::run(&loaded, &run_dir).await.map(|()| 0)
        }
        Command::Notify => crate::notify::run().await.map(|()| 0),
        Command::Plan { json } => {
            let loaded = following(&cli.config, &run_dir);
            let health = health::published_verdicts(&run_dir);
            let (plan, fw, _) = match status::current_plan(&loaded.config, &health).await {
                Ok(current) => current,
                // The broken file is the first thing to fix: its exit code (2) wins over
                // a later failure (NetworkManager unreachable, say), which is still said.
                Err(e) if loaded.error.is_some() => {
                    error!("{e}");
                    return Ok(fallback_exit(&loaded));
                }
                Err(e) => return Err(e),
            };
            let rendered = fw.render(&plan.firewall);
            let text = if json {
                // The plan's own fields, plus what the chosen backend would install, so
                // that a script sees the same as a person.
                #[derive(serde::Serialize)]
                struct PlanReport<'a> {
                    #[serde(flatten)]
                    plan: &'a crate::plan::Plan,
                    backend: crate::kernel::firewall::Backend,
                    firewall_rendered: &'a str,
                }
                serde_json::to_string_pretty(&PlanReport {
                    plan: &plan,
                    backend: fw.backend(),
                    firewall_rendered: &rendered,
                })
                .expect("serialises")
            } else {
                status::render_plan(&plan, fw.backend(), &rendered)
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
        Command::Run {
            ref via,
            ref command,
        } => run_via(&cli.config, &run_dir, via, command).await,
        Command::Explain {
            ref dest,
            port,
            udp,
            ref user,
            from,
            ref device,
            ref via,
            json,
        } => {
            let q = ExplainArgs {
                dest,
                port,
                udp,
                user: user.as_deref(),
                from,
                device: device.as_deref(),
                via: via.as_deref(),
            };
            explain(&cli.config, &run_dir, q, json).await
        }
        Command::Split { ref iface, count } => split(iface, count).await.map(|()| 0),
        Command::Unsplit { ref iface } => split(iface, 0).await.map(|()| 0),
        Command::GenerateAssets { dir } => generate_assets(&dir).map(|()| 0),
    }
}

/// `run --via`: the program into our cgroup of the uplink, the firewall told, then
/// the program in place of this process.
async fn run_via(config_path: &Path, run_dir: &Path, via: &str, command: &[String]) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    let nm = crate::nm::NetworkManager::connect().await?;
    let view = nm.view().await?;
    let found = view
        .uplinks
        .iter()
        .find(|u| u.connection_id == via)
        .or_else(|| view.uplinks.iter().find(|u| u.iface == via));
    let Some(up) = found else {
        let active: Vec<String> = view
            .uplinks
            .iter()
            .map(|u| format!("{} ({})", u.iface, u.connection_id))
            .collect();
        return Err(Error::Refused(format!(
            "run --via {via}: not an active uplink (active: {}); nothing was started",
            if active.is_empty() {
                "none".to_string()
            } else {
                active.join(", ")
            }
        )));
    };
    let iface = up.iface.clone();
    // In the cgroup before the reconcile: a reconcile removes the ones nobody is in.
    crate::kernel::cgroup::enter(&iface)?;
    let loaded = following(config_path, run_dir);
    let health = health::published_verdicts(run_dir);
    let outcome = reconcile::reconcile(&loaded.config, run_dir, &health, None)
        .await
        .map_err(|e| loaded.locate(e))?;
    let pinned = outcome.plan.firewall.ladder.iter().any(|r| {
        matches!(&r.why, crate::kernel::firewall::Why::Via { iface: i } if *i == iface)
            && matches!(r.action, crate::kernel::firewall::Action::Uplink { .. })
    });
    if !pinned {
        return Err(Error::Refused(format!(
            "run --via {via}: {iface} is not balanced (disabled in the config?); nothing was started"
        )));
    }
    let err = std::process::Command::new(&command[0])
        .args(&command[1..])
        .exec();
    Err(Error::io(format!("starting {}", command[0]), err))
}

/// The arguments of `explain`.
struct ExplainArgs<'a> {
    dest: &'a str,
    port: Option<u16>,
    udp: bool,
    user: Option<&'a str>,
    from: Option<std::net::IpAddr>,
    device: Option<&'a str>,
    via: Option<&'a str>,
}

async fn explain(
    config_path: &Path,
    run_dir: &Path,
    args: ExplainArgs<'_>,
    json: bool,
) -> Result<i32> {
    use crate::explain::{Live, Query};
    let loaded = config::load_or_last_good(config_path, run_dir);
    loaded.log_error();
    let (destination, name) = match args.dest.parse::<std::net::IpAddr>() {
        Ok(a) => (a, None),
        Err(_) => {
            let found = config::policy::resolve(args.dest)
                .map_err(|e| Error::Refused(format!("cannot resolve {}: {e}", args.dest)))?;
            let first = found
                .iter()
                .find(|a| a.is_ipv4())
                .or(found.first())
                .copied()
                .ok_or_else(|| Error::Refused(format!("{} has no address", args.dest)))?;
            (first, Some(args.dest.to_string()))
        }
    };
    let uid = match args.user {
        None => unsafe { libc::getuid() },
        Some(u) => config::policy::UserSpec::Name(u.to_string())
            .uid()
            .map_err(Error::Refused)?,
    };
    let health = health::published_verdicts(run_dir);
    let nm = crate::nm::NetworkManager::connect().await?;
    let privileged = privilege::require_net_admin("explain").is_ok();
    let current = status::current(&loaded.config, &health, &nm, privileged).await?;
    let via = args.via.map(|v| {
        current
            .plan
            .uplinks
            .iter()
            .find(|u| u.connection_id == v)
            .map_or_else(|| v.to_string(), |u| u.iface.clone())
    });
    let counters = if privileged {
        current.fw.counters().map_err(|e| e.to_string())
    } else {
        Err("the round's counters need root".to_string())
    };
    let sticky = current
        .fw
        .sticky(&current.plan.firewall)
        .unwrap_or_default();
    let live = Live {
        uplinks: &current.facts.uplinks,
        local: &current.facts.local,
        main_routes: &current.routing.main_routes,
        counters: counters.as_ref().map_err(Clone::clone),
        sticky: &sticky,
    };
    let q = Query {
        destination,
        name,
        port: args.port,
        protocol: if args.udp { 17 } else { 6 },
        uid,
        from: args.from,
        device: args.device.map(str::to_string),
        via,
    };
    let answer = crate::explain::explain(&current.plan, &live, &q);
    let mut text = if json {
        serde_json::to_string_pretty(&answer).expect("serialises")
    } else {
        answer.words.clone()
    };
    if !current.in_sync && !json {
        text.push_str("\n  note: the kernel does not hold this plan yet (run `nm-multiwan apply`)");
    }
    print_stdout(&text)?;
    Ok(0)
}

/// Reconciles; with a config file that fails, reconciles with the last good
/// configuration all the same (following NetworkManager matters more than the typo),
/// then exits 2 so that the person or script that ran it hears of the file. Returns
/// the exit code and whether the run left nothing for later (see
/// [`reconcile::Outcome::unsettled`]).
async fn apply(config_path: &Path, run_dir: &Path, why: &str) -> Result<(i32, bool)> {
    let loaded = following(config_path, run_dir);
    // A running daemon's verdicts, so that we reach the result it reaches.
    let health = health::published_verdicts(run_dir);
    let (outcome, refused) = reconcile::reconcile_or(
        &loaded.config,
        || config::last_good_or_defaults(run_dir).0,
        run_dir,
        &health,
        None,
    )
    .await?;
    let code = match refused {
        // The file loads but names an uplink nobody knows: said loudly, and the run
        // followed NetworkManager with the last good configuration all the same.
        Some(e) => {
            let e = loaded.locate(e);
            error!(
                "{e}; following NetworkManager with the last good configuration until the file is fixed"
            );
            e.exit_code()
        }
        None => {
            // Kept once applied: a configuration the facts refuse never becomes the
            // fallback.
            if let Err(e) = loaded.keep_as_last_good(run_dir) {
                warn!("cannot keep the configuration as the last good one: {e}");
            }
            fallback_exit(&loaded)
        }
    };
    reconcile::log_outcome(&why, &outcome, tracing::Level::INFO);
    Ok((code, !outcome.unsettled()))
}

/// Waits between the follow-up's reconciles: about half a minute in all, time enough
/// for NetworkManager to finish starting or re-activating a device.
const FOLLOW_UP_DELAYS: [Duration; 6] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(15),
];

/// Starts `nm-multiwan follow-up` in the background, detached from the dispatcher
/// (which waits for its scripts): a dispatcher event has no successor to count on
/// when NetworkManager was still starting or a device in flux.
fn spawn_follow_up(config: &Path) {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/bin/nm-multiwan"));
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--config")
        .arg(config)
        .arg("follow-up")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    // Its own session: it outlives the dispatcher script and its signals.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(child) => info!(pid = child.id(), "a follow-up reconcile will look again"),
        Err(e) => tracing::warn!("cannot start a follow-up reconcile: {e}"),
    }
}

/// Reconciles until a run leaves nothing for later, or the delays run out. Only one
/// follow-up runs at a time: a second one leaves the work to the first.
async fn follow_up(config_path: &Path, run_dir: &Path) -> Result<()> {
    let (_, lock) = state::open_lock_file(run_dir, "follow-up.lock")?;
    if lock.try_lock().is_err() {
        debug!("a follow-up is already running");
        return Ok(());
    }
    for delay in FOLLOW_UP_DELAYS {
        tokio::time::sleep(delay).await;
        match apply(config_path, run_dir, "follow-up").await {
            Ok((_, true)) => return Ok(()),
            Ok((_, false)) => {}
            Err(e) => tracing::warn!("follow-up reconcile failed: {e}"),
        }
    }
    tracing::warn!("NetworkManager did not settle; the next event or `apply` will finish");
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

    #[test]
    fn commands_that_write_the_network_are_known() {
        let writes = |args: &[&str]| {
            let mut full = vec!["nm-multiwan"];
            full.extend_from_slice(args);
            Cli::try_parse_from(full)
                .unwrap()
                .command
                .changes_the_network()
        };
        for args in [
            &["apply"][..],
            &["flush"],
            &["daemon"],
            &["dispatch", "eth0", "up"],
            &["dispatch", "eth0", "down"],
            &["dispatch", "wlan0", "dhcp4-change"],
        ] {
            assert!(writes(args), "{args:?} writes the network");
        }
        for args in [
            &["status"][..],
            &["status", "--json"],
            &["top"],
            &["notify"],
            &["plan"],
            &["dispatch", "eth0", "pre-up"],
            &["dispatch", "eth0", "hostname"],
            &["generate-assets", "/nonexistent"],
        ] {
            assert!(!writes(args), "{args:?} writes nothing");
        }
    }
}
