//! `nm-multiwan top`: a live view of the uplinks, refreshed every second. Per uplink
//! its state and health, download and upload rate, tracked connections, probe RTT
//! and loss (when the daemon runs) and a sparkline of the last minute's download;
//! a total line with the aggregate rate against the best single uplink.
//!
//! It reads a running daemon's status when one answers (rates, a minute of history,
//! probes); otherwise it gathers the status itself, as `status` does, and samples the
//! interfaces' counters on its own. On a terminal it draws with ratatui (crossterm)
//! and restores the terminal on `q`, Ctrl-C, SIGTERM and panics; without one
//! (`TERM=dumb`, or output that is not a terminal) it prints a plain line per second.

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use crossterm::event::{Event, EventStream, KeyCode, KeyEventKind, KeyModifiers};
use futures::StreamExt as _;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style, Stylize as _};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::status::{self, StatusReport};
use crate::traffic::{self, HISTORY_LEN, Traffic, human_rate};

/// Time between refreshes.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How long a refresh waits for the daemon before reading the state itself.
const DAEMON_WAIT: Duration = Duration::from_millis(800);
/// Probe loss is counted over this window.
const LOSS_WINDOW: Duration = Duration::from_secs(60);

/// What `top` remembers between refreshes: its own counter samples (used when no
/// daemon samples) and the daemon's probe counters (for the loss of the last minute).
#[derive(Debug, Default)]
pub struct Tracker {
    own: Traffic,
    /// Per interface: (when, probe rounds, failed rounds), oldest first.
    probes: BTreeMap<String, VecDeque<(Instant, u64, u64)>>,
}

impl Tracker {
    /// Completes a fresh report: rates from its own samples when the daemon gave
    /// none. `read` reads an interface's counters ([`traffic::read_counters`]).
    pub fn update(
        &mut self,
        report: StatusReport,
        at: Instant,
        read: impl Fn(&str) -> Option<traffic::Counters>,
    ) -> StatusReport {
        // Sampled every refresh, so that the history is there should the daemon go.
        self.own
            .sample(report.uplinks.iter().map(|u| u.iface.as_str()), at, read);
        match &report.health {
            Some(h) => {
                self.probes.retain(|k, _| h.uplinks.contains_key(k));
                for (iface, u) in &h.uplinks {
                    let q = self.probes.entry(iface.clone()).or_default();
                    // Fewer rounds than before: probing started afresh.
                    if q.back().is_some_and(|&(_, r, _)| r > u.rounds) {
                        q.clear();
                    }
                    q.push_back((at, u.rounds, u.rounds_failed));
                    // The oldest reading kept is the last one from before the window:
                    // the baseline of the minute.
                    while q
                        .get(1)
                        .is_some_and(|&(t, _, _)| at.saturating_duration_since(t) >= LOSS_WINDOW)
                    {
                        q.pop_front();
                    }
                }
            }
            None => self.probes.clear(),
        }
        if report.traffic.is_some() {
            report
        } else {
            report.with_traffic(self.own.report())
        }
    }

    /// Probe rounds lost over the last minute, as a fraction; `None` before two
    /// readings a round apart.
    pub fn loss(&self, iface: &str) -> Option<f64> {
        let q = self.probes.get(iface)?;
        let (&(_, r0, f0), &(_, r1, f1)) = (q.front()?, q.back()?);
        let rounds = r1.checked_sub(r0).filter(|&n| n > 0)?;
        Some(f1.saturating_sub(f0) as f64 / rounds as f64)
    }
}

/// One uplink's line.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkRow {
    pub iface: String,
    pub connection: String,
    /// In the balance or out of it; where a role will go once uplinks have one.
    pub state: String,
    pub health: String,
    pub rtt: String,
    pub loss: String,
    pub download: String,
    pub upload: String,
    pub conns: String,
    /// Download rates of the last minute, oldest first.
    pub history: Vec<u64>,
}

/// Everything one screen (or plain line) shows.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub rows: Vec<UplinkRow>,
    /// The aggregate rate, and how it compares with the best single uplink.
    pub total: String,
    /// Where the figures come from, and what is missing.
    pub notes: Vec<String>,
}

/// The view of a completed report (see [`Tracker::update`]).
pub fn view(r: &StatusReport, tracker: &Tracker, from_daemon: bool) -> View {
    let traffic = r.traffic.clone().unwrap_or_default();
    let rows = r
        .uplinks
        .iter()
        .map(|u| {
            let (health, rtt) = status::health_cells(r, u);
            let t = traffic.uplinks.get(&u.iface);
            let rate =
                |f: fn(&traffic::UplinkTraffic) -> u64| t.map_or("-".into(), |t| human_rate(f(t)));
            UplinkRow {
                iface: match &u.parent {
                    Some(p) => format!("{} (on {p})", u.iface),
                    None => u.iface.clone(),
                },
                connection: u.connection.clone(),
                state: status::state_cell(u).into(),
                health,
                rtt,
                loss: tracker
                    .loss(&u.iface)
                    .map_or("-".into(), |l| format!("{:.0}%", l * 100.0)),
                download: rate(|t| t.rx_rate),
                upload: rate(|t| t.tx_rate),
                conns: u.connections.map_or("-".into(), |c| c.to_string()),
                history: t.map(|t| t.rx_history.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let mut notes = vec![match &r.health {
        Some(h) => format!(
            "health: the daemon's probes to {} every {} ms",
            if h.targets.is_empty() {
                "nothing (probing off)".to_string()
            } else {
                h.targets.join(", ")
            },
            h.interval_ms
        ),
        None if r.uplinks.iter().any(|u| u.nm_connectivity.is_some()) => {
            "health: NetworkManager's connectivity check (no daemon: no probes, RTT or loss)".into()
        }
        None => "health: - (no daemon probes the uplinks; NetworkManager's connectivity check \
                 is off)"
            .into(),
    }];
    notes.push(if from_daemon {
        "figures from the daemon (rates sampled every second)".into()
    } else {
        "figures read directly: no daemon answered (rates sampled by top itself)".into()
    });
    if !r.unreadable.is_empty() {
        notes.push(
            "CONNS: not readable without root (CAP_NET_ADMIN); a running daemon shows them".into(),
        );
    }
    if let Some(e) = &r.config_error {
        notes.push(format!("CONFIG ERROR: {}", e.message));
    }
    View {
        rows,
        total: total_line(r),
        notes,
    }
}

/// "total: 18 Mbit/s down, 400 kbit/s up; x1.9 over Wired connection 1 alone".
fn total_line(r: &StatusReport) -> String {
    let Some(t) = &r.traffic else {
        return "total: -".into();
    };
    let rates: Vec<(&str, u64, u64)> = r
        .uplinks
        .iter()
        .filter_map(|u| {
            let t = t.uplinks.get(&u.iface)?;
            let name = if u.connection.is_empty() {
                u.iface.as_str()
            } else {
                u.connection.as_str()
            };
            Some((name, t.rx_rate, t.tx_rate))
        })
        .collect();
    let down: u64 = rates.iter().map(|r| r.1).sum();
    let up: u64 = rates.iter().map(|r| r.2).sum();
    let mut s = format!("total: {} down, {} up", human_rate(down), human_rate(up));
    // The gain over the best single uplink: worth saying with two uplinks or more
    // and some traffic (at 1 kB/s it is noise).
    let best = rates.iter().max_by_key(|r| r.1 + r.2);
    if let Some(&(name, bd, bu)) = best
        && rates.len() > 1
        && bd + bu >= 1000
    {
        let ratio = (down + up) as f64 / (bd + bu) as f64;
        s.push_str(&format!("; x{ratio:.1} over {name} alone"));
    }
    s
}

/// `values` as block characters, the last `width` of them, scaled to `max`.
pub fn sparkline(values: &[u64], width: usize, max: u64) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let shown = &values[values.len().saturating_sub(width)..];
    shown
        .iter()
        .map(|&v| {
            if v == 0 || max == 0 {
                ' '
            } else {
                let i = ((v as f64 / max as f64) * (BARS.len() - 1) as f64).round() as usize;
                BARS[i.min(BARS.len() - 1)]
            }
        })
        .collect()
}

/// The view in one line, for a dumb terminal or a pipe.
pub fn plain_line(v: &View, clock: &str) -> String {
    let uplinks: Vec<String> = v
        .rows
        .iter()
        .map(|r| {
            let mut s = format!(
                "{} ({}) {} {} down {} up {} conns {}",
                r.iface, r.connection, r.state, r.health, r.download, r.upload, r.conns
            );
            if r.rtt != "-" {
                s.push_str(&format!(" rtt {}", r.rtt));
            }
            if r.loss != "-" {
                s.push_str(&format!(" loss {}", r.loss));
            }
            s
        })
        .collect();
    let uplinks = if uplinks.is_empty() {
        "no uplinks".to_string()
    } else {
        uplinks.join(" | ")
    };
    format!("{clock} {uplinks} | {}", v.total)
}

/// The local time of day, HH:MM:SS.
fn clock() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as libc::time_t;
    // SAFETY: localtime_r writes into the tm we own and reads `now`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return "--:--:--".into();
    }
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// Whether the TUI can be drawn: standard output is a terminal that is not dumb.
pub fn can_draw(term: Option<&str>, stdout_is_tty: bool) -> bool {
    stdout_is_tty && term.is_some_and(|t| !t.is_empty() && t != "dumb")
}

/// Where each refresh comes from.
struct Source<'a> {
    config: &'a Config,
    /// Why the config file is not in use, when it is not.
    config_error: Option<status::ConfigErrorReport>,
    run_dir: &'a Path,
    /// The system bus, to ask a running daemon.
    bus: zbus::Connection,
}

impl Source<'_> {
    /// The daemon's status when it answers, else the state read here. Returns whether
    /// it came from the daemon.
    async fn fetch(&self) -> Result<(StatusReport, bool)> {
        if let Some(r) = crate::daemon::status_on(&self.bus, DAEMON_WAIT).await {
            return Ok((r, true));
        }
        let verdicts = crate::health::published_verdicts(self.run_dir);
        let mut report = status::gather(self.config, &verdicts).await?;
        report.config_error = self.config_error.clone();
        Ok((report, false))
    }
}

/// Runs until `q`, Ctrl-C or SIGTERM. The first reading must succeed (a bus or
/// NetworkManager out of reach fails with exit code 3, as `status` does); later
/// failures are shown and retried.
pub async fn run(loaded: &crate::config::Loaded, run_dir: &Path) -> Result<()> {
    let source = Source {
        config: &loaded.config,
        config_error: status::ConfigErrorReport::from_loaded(loaded),
        run_dir,
        bus: crate::bus::system(crate::bus::DBUS_TIMEOUT).await?,
    };
    let first = source.fetch().await?;
    let term = std::env::var("TERM").ok();
    if can_draw(term.as_deref(), std::io::stdout().is_terminal()) {
        draw_loop(&source, first).await
    } else {
        plain_loop(&source, first).await
    }
}

/// Stops the loops: SIGTERM, SIGINT (Ctrl-C outside raw mode) and SIGHUP (the
/// terminal went away).
struct Stop {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Stop {
    fn new() -> Result<Stop> {
        let sig =
            |kind| signal(kind).map_err(|e| Error::io("installing the signal handlers of top", e));
        Ok(Stop {
            term: sig(SignalKind::terminate())?,
            int: sig(SignalKind::interrupt())?,
            hup: sig(SignalKind::hangup())?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

async fn plain_loop(source: &Source<'_>, first: (StatusReport, bool)) -> Result<()> {
    let mut stop = Stop::new()?;
    let mut tracker = Tracker::default();
    let mut out = std::io::stdout();
    let say = |out: &mut std::io::Stdout, line: &str| -> Result<bool> {
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => Ok(true),
            // `| head`: the reader is gone; so are we.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(Error::io("stdout", e)),
        }
    };
    if !say(
        &mut out,
        "nm-multiwan top: no terminal to draw on (TERM=dumb, or output is not a terminal): \
         one line per second; Ctrl-C stops",
    )? {
        return Ok(());
    }
    let mut fetched = Ok(first);
    let mut next = tokio::time::Instant::now();
    loop {
        let line = match fetched {
            Ok((report, from_daemon)) => {
                let report = tracker.update(report, Instant::now(), traffic::read_counters);
                plain_line(&view(&report, &tracker, from_daemon), &clock())
            }
            Err(e) => format!("{} cannot read the status: {e}", clock()),
        };
        if !say(&mut out, &line)? {
            return Ok(());
        }
        next += REFRESH;
        tokio::select! {
            _ = stop.wait() => return Ok(()),
            _ = tokio::time::sleep_until(next) => {}
        }
        fetched = tokio::select! {
            _ = stop.wait() => return Ok(()),
            r = source.fetch() => r,
        };
    }
}

async fn draw_loop(source: &Source<'_>, first: (StatusReport, bool)) -> Result<()> {
    let mut stop = Stop::new()?;
    // Raw mode and the alternate screen; a panic hook puts the terminal back first.
    let mut terminal =
        ratatui::try_init().map_err(|e| Error::io("setting up the terminal for top", e))?;
    let result = draw_until_quit(&mut terminal, source, first, &mut stop).await;
    let _ = terminal.show_cursor();
    drop(terminal);
    ratatui::restore();
    result
}

async fn draw_until_quit(
    terminal: &mut ratatui::DefaultTerminal,
    source: &Source<'_>,
    first: (StatusReport, bool),
    stop: &mut Stop,
) -> Result<()> {
    let mut events = EventStream::new();
    let mut tracker = Tracker::default();
    let (report, from_daemon) = first;
    let report = tracker.update(report, Instant::now(), traffic::read_counters);
    let mut shown = view(&report, &tracker, from_daemon);
    let mut error: Option<String> = None;
    let draw = |terminal: &mut ratatui::DefaultTerminal, v: &View, error: &Option<String>| {
        terminal
            .draw(|f| render(f, v, error.as_deref()))
            .map(|_| ())
            .map_err(|e| Error::io("drawing top", e))
    };
    draw(terminal, &shown, &error)?;
    let mut next = tokio::time::Instant::now() + REFRESH;
    let refresh = |at: tokio::time::Instant| async move {
        tokio::time::sleep_until(at).await;
        source.fetch().await
    };
    let mut pending = Box::pin(refresh(next));
    loop {
        tokio::select! {
            _ = stop.wait() => return Ok(()),
            ev = events.next() => match ev {
                Some(Ok(Event::Key(k))) if k.kind != KeyEventKind::Release => {
                    let ctrl_c = k.modifiers.contains(KeyModifiers::CONTROL)
                        && matches!(k.code, KeyCode::Char('c' | 'C'));
                    if ctrl_c || matches!(k.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc) {
                        return Ok(());
                    }
                }
                Some(Ok(Event::Resize(..))) => draw(terminal, &shown, &error)?,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(Error::io("reading the terminal", e)),
                // No more input: nothing can ask us to quit any more.
                None => return Ok(()),
            },
            fetched = &mut pending => {
                match fetched {
                    Ok((report, from_daemon)) => {
                        let report = tracker.update(report, Instant::now(), traffic::read_counters);
                        shown = view(&report, &tracker, from_daemon);
                        error = None;
                    }
                    Err(e) => error = Some(e.to_string()),
                }
                draw(terminal, &shown, &error)?;
                next += REFRESH;
                let now = tokio::time::Instant::now();
                if next < now {
                    next = now;
                }
                pending = Box::pin(refresh(next));
            }
        }
    }
}

const COLUMN_SPACING: u16 = 2;

/// Draws one screen.
fn render(f: &mut ratatui::Frame, v: &View, error: Option<&str>) {
    let area = f.area();
    // Title, the table, and the total with the notes right under it.
    let [title, _, body, _, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1 + v.rows.len() as u16),
        Constraint::Length(1),
        Constraint::Min(1),
    ])
    .areas(area);
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::from("nm-multiwan top").bold(),
            Span::from(format!(
                " — {} uplink{}, refreshed every second   (q quits)",
                v.rows.len(),
                if v.rows.len() == 1 { "" } else { "s" }
            )),
        ])),
        title,
    );

    let header = [
        "UPLINK",
        "CONNECTION",
        "STATE",
        "HEALTH",
        "RTT",
        "LOSS",
        "DOWNLOAD",
        "UPLOAD",
        "CONNS",
        "LAST MINUTE (download)",
    ];
    let cells = |r: &UplinkRow| -> [String; 9] {
        [
            r.iface.clone(),
            r.connection.clone(),
            r.state.clone(),
            r.health.clone(),
            r.rtt.clone(),
            r.loss.clone(),
            r.download.clone(),
            r.upload.clone(),
            r.conns.clone(),
        ]
    };
    let mut widths: Vec<u16> = header[..9].iter().map(|h| h.len() as u16).collect();
    for r in &v.rows {
        for (w, c) in widths.iter_mut().zip(cells(r)) {
            *w = (*w).max(c.chars().count() as u16);
        }
    }
    let spark_width = body
        .width
        .saturating_sub(widths.iter().sum::<u16>() + COLUMN_SPACING * widths.len() as u16)
        .min(HISTORY_LEN as u16) as usize;
    // One scale for all uplinks, so that their lines compare.
    let max = v
        .rows
        .iter()
        .flat_map(|r| r.history.iter().copied())
        .max()
        .unwrap_or(0);
    let rows: Vec<Row> = v
        .rows
        .iter()
        .map(|r| {
            let health_style = match r.health.as_str() {
                "ok" => Style::new().green(),
                "DOWN" => Style::new().red().add_modifier(Modifier::BOLD),
                _ => Style::new(),
            };
            let mut row: Vec<Cell> = cells(r).into_iter().map(Cell::from).collect();
            row[3] = Cell::from(r.health.clone()).style(health_style);
            row.push(Cell::from(sparkline(&r.history, spark_width, max)).cyan());
            Row::new(row)
        })
        .collect();
    let mut constraints: Vec<Constraint> = widths.iter().map(|&w| Constraint::Length(w)).collect();
    constraints.push(Constraint::Fill(1));
    let table = Table::new(rows, constraints)
        .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
        .column_spacing(COLUMN_SPACING);
    f.render_widget(table, body);

    let mut lines = vec![Line::from(v.total.clone()).bold()];
    lines.extend(v.notes.iter().map(|n| Line::from(n.clone())));
    if let Some(e) = error {
        lines.push(Line::from(format!("cannot read the status: {e}")).red());
    }
    f.render_widget(Paragraph::new(lines), footer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{HealthReport, UplinkHealthReport};
    use crate::status::{STATUS_FORMAT, UplinkStatus};

    fn uplink(iface: &str, conn: &str) -> UplinkStatus {
        UplinkStatus {
            iface: iface.into(),
            parent: None,
            connection: conn.into(),
            connection_uuid: String::new(),
            address: None,
            gateway: None,
            address6: None,
            gateway6: None,
            ipv6_balanced: false,
            mark: "0x1000000/0x3f000000".into(),
            table: 6101,
            weight: 1,
            role: crate::plan::Role::Primary,
            metered: false,
            in_balance: true,
            healthy: None,
            connections: Some(3),
            connections6: None,
            new_connections: 0,
            new_connections6: 0,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_rate: None,
            tx_rate: None,
            nm_connectivity: None,
        }
    }

    fn report(uplinks: Vec<UplinkStatus>) -> StatusReport {
        StatusReport {
            format: STATUS_FORMAT,
            in_sync: true,
            mark_mask: "0x3f000000".into(),
            firewall: "nftables".into(),
            ipv6: false,
            uplinks,
            warnings: vec![],
            health: None,
            config_error: None,
            unreadable: vec![],
            traffic: None,
            policies: vec![],
        }
    }

    fn probed(rounds: u64, failed: u64, healthy: bool) -> UplinkHealthReport {
        UplinkHealthReport {
            healthy,
            probes_healthy: healthy,
            consecutive_successes: if healthy { 3 } else { 0 },
            consecutive_failures: if healthy { 0 } else { 5 },
            last_rtt_ms: Some(11.8),
            last_change: 0.0,
            last_error: None,
            nm_connectivity: None,
            rounds,
            rounds_failed: failed,
            reason: (!healthy).then(|| "IPv4: dead: no answer to the last 5 probes".into()),
            loss_percent: None,
            median_rtt_ms: None,
            times_out: u64::from(!healthy),
            families: BTreeMap::new(),
        }
    }

    #[test]
    fn own_samples_give_rates_and_the_total_compares_with_the_best_uplink() {
        let t0 = Instant::now();
        let mut tracker = Tracker::default();
        let r = report(vec![uplink("eth0", "Wired"), uplink("wlan0", "Wi-Fi")]);
        let counters = |n: u64| {
            move |iface: &str| {
                Some(traffic::Counters {
                    rx_bytes: n * if iface == "eth0" { 1_000_000 } else { 900_000 },
                    tx_bytes: n * 10_000,
                })
            }
        };
        let first = tracker.update(r.clone(), t0, counters(1));
        let v = view(&first, &tracker, false);
        assert_eq!(v.rows[0].download, "-", "one sample is no rate");
        assert_eq!(v.total, "total: 0 bit/s down, 0 bit/s up");
        let second = tracker.update(r, t0 + Duration::from_secs(1), counters(2));
        let v = view(&second, &tracker, false);
        assert_eq!(v.rows[0].download, "8.0 Mbit/s");
        assert_eq!(v.rows[1].download, "7.2 Mbit/s");
        assert_eq!(v.rows[0].upload, "80 kbit/s");
        assert_eq!(
            v.total,
            "total: 15 Mbit/s down, 160 kbit/s up; x1.9 over Wired alone"
        );
        assert_eq!(v.rows[0].loss, "-", "no daemon, no loss");
        assert!(
            v.notes[0].starts_with("health: - (no daemon"),
            "{:?}",
            v.notes
        );
        let line = plain_line(&v, "12:00:00");
        assert!(
            line.starts_with("12:00:00 eth0 (Wired) active - down 8.0 Mbit/s up 80 kbit/s conns 3 | wlan0 (Wi-Fi)"),
            "{line}"
        );
        assert!(line.ends_with("x1.9 over Wired alone"), "{line}");
    }

    #[test]
    fn the_daemons_figures_win_and_loss_is_over_the_last_minute() {
        let t0 = Instant::now();
        let mut tracker = Tracker::default();
        let mut r = report(vec![uplink("eth0", "Wired"), uplink("wlan0", "Wi-Fi")]);
        let health = |w_rounds, w_failed| HealthReport {
            targets: vec!["198.51.100.10".into()],
            interval_ms: 500,
            down_after: 3,
            up_after: 3,
            max_loss: 20,
            max_rtt_ms: 1000,
            window: 100,
            uplinks: BTreeMap::from([
                ("eth0".to_string(), probed(100, 0, true)),
                ("wlan0".to_string(), probed(w_rounds, w_failed, false)),
            ]),
        };
        r.health = Some(health(100, 10));
        let daemon_traffic = traffic::TrafficReport {
            interval_ms: 1000,
            uplinks: BTreeMap::from([(
                "eth0".to_string(),
                traffic::UplinkTraffic {
                    rx_rate: 125_000,
                    tx_rate: 0,
                    rx_history: vec![0, 125_000],
                    tx_history: vec![0, 0],
                },
            )]),
        };
        let r = r.with_traffic(daemon_traffic);
        let none = |_: &str| None;
        let done = tracker.update(r.clone(), t0, none);
        assert_eq!(done.traffic, r.traffic, "the daemon's rates are kept");
        let mut later = r.clone();
        later.health = Some(health(104, 14));
        let done = tracker.update(later, t0 + Duration::from_secs(2), none);
        let v = view(&done, &tracker, true);
        assert_eq!(v.rows[0].download, "1.0 Mbit/s");
        assert_eq!(v.rows[0].history, vec![0, 125_000]);
        assert_eq!(v.rows[0].rtt, "11.8 ms");
        assert_eq!(v.rows[1].health, "DOWN");
        assert_eq!(v.rows[1].rtt, "-", "no stale RTT for a dead uplink");
        assert_eq!(v.rows[1].loss, "100%");
        assert_eq!(v.rows[1].download, "-", "not sampled by the daemon yet");
        assert!(v.notes[0].contains("every 500 ms"), "{:?}", v.notes);
        // A minute later the old reading has left the window.
        let mut much_later = r;
        much_later.health = Some(health(300, 14));
        let done = tracker.update(much_later, t0 + Duration::from_secs(70), none);
        let v = view(&done, &tracker, true);
        assert_eq!(v.rows[1].loss, "0%", "{:?}", tracker.probes);
    }

    #[test]
    fn sparklines_scale_and_keep_the_latest() {
        assert_eq!(sparkline(&[0, 50, 100], 10, 100), " ▅█");
        assert_eq!(sparkline(&[100, 0, 100, 25], 2, 100), "█▃");
        assert_eq!(sparkline(&[5, 5], 5, 0), "  ");
    }

    #[test]
    fn dumb_terminals_and_pipes_get_plain_lines() {
        assert!(can_draw(Some("xterm-256color"), true));
        assert!(can_draw(Some("screen"), true));
        assert!(!can_draw(Some("dumb"), true));
        assert!(!can_draw(None, true));
        assert!(!can_draw(Some(""), true));
        assert!(!can_draw(Some("xterm"), false));
    }

    #[test]
    fn the_screen_shows_every_uplink() {
        let v = View {
            rows: vec![UplinkRow {
                iface: "eth0".into(),
                connection: "Wired connection 1".into(),
                state: "active".into(),
                health: "ok".into(),
                rtt: "11.8 ms".into(),
                loss: "0%".into(),
                download: "9.4 Mbit/s".into(),
                upload: "120 kbit/s".into(),
                conns: "14".into(),
                history: vec![1, 2, 3],
            }],
            total: "total: 9.4 Mbit/s down, 120 kbit/s up".into(),
            notes: vec!["health: the daemon's probes".into()],
        };
        let backend = ratatui::backend::TestBackend::new(120, 8);
        let mut terminal = ratatui::Terminal::new(backend).unwrap();
        terminal.draw(|f| render(f, &v, Some("boom"))).unwrap();
        let screen: String = terminal
            .backend()
            .buffer()
            .content()
            .chunks(120)
            .map(|l| l.iter().map(|c| c.symbol()).collect::<String>() + "\n")
            .collect();
        for want in [
            "nm-multiwan top",
            "UPLINK",
            "LAST MINUTE",
            "eth0",
            "Wired connection 1",
            "9.4 Mbit/s",
            "11.8 ms",
            "total: 9.4 Mbit/s down",
            "cannot read the status: boom",
        ] {
            assert!(screen.contains(want), "{want:?} missing from\n{screen}");
        }
    }
}
