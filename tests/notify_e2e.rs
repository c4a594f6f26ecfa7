//! `nm-multiwan notify` in the sandbox: a private session bus (`dbus-daemon`) with a
//! stand-in `org.freedesktop.Notifications` server (served by this test, recording
//! every call), `notify` running as `nobody` in the sandbox's host, the daemon on the
//! sandbox's system bus. Nothing is shown while all is well; cutting an uplink's
//! upstream produces exactly one notification naming it, healing one more that
//! replaces it, and its connection going down one that says it left. The D-Bus policy
//! lets `nobody` receive the daemon's signal and refuses one sent by `nobody`, which
//! shows nothing. Root only; CI runs as root.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::daemon::{AS_NOBODY, DaemonProcess, PROBE_CONFIG, cut_upstream, wait_for};
use common::{Fw, Options, Sandbox, sandbox_script};
use zbus::zvariant::OwnedValue;

/// One `Notify` call as the server received it.
#[derive(Debug, Clone)]
struct Call {
    app_name: String,
    replaces_id: u32,
    summary: String,
    body: String,
    /// The id the server answered with.
    id: u32,
}

/// The stand-in notification server.
struct Server {
    calls: Arc<Mutex<Vec<Call>>>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Server {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        _hints: HashMap<String, OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut calls = self.calls.lock().unwrap();
        let id = if replaces_id != 0 {
            replaces_id
        } else {
            calls.len() as u32 + 100
        };
        calls.push(Call {
            app_name,
            replaces_id,
            summary,
            body,
            id,
        });
        id
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["body".into()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        ("stand-in".into(), "test".into(), "1".into(), "1.2".into())
    }

    fn close_notification(&self, _id: u32) {}
}

/// A private session bus anyone may use, its socket in a directory `nobody` can
/// reach, run in the sandbox's host (gone with the sandbox, killed on drop).
struct SessionBus {
    dir: PathBuf,
    address: String,
    daemon: Child,
}

impl SessionBus {
    fn start(sb: &Sandbox) -> SessionBus {
        use std::os::unix::fs::PermissionsExt;
        // Both backends' tests run at once in this process.
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("nmmw-session-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.join("bus");
        let config = dir.join("session.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(sb.work_file("session-bus.log")).unwrap();
        let daemon = Command::new(sandbox_script())
            .args(["exec", &sb.name, "dbus-daemon", "--nofork"])
            .arg(format!("--config-file={}", config.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dbus-daemon");
        sb.wait_until(10, "the session bus", || socket.exists());
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
        SessionBus {
            address: format!("unix:path={}", socket.display()),
            dir,
            daemon,
        }
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `nm-multiwan notify` as nobody in the sandbox's host; killed on drop, its log
/// printed when the test fails.
struct Notifier {
    child: Child,
    log: PathBuf,
}

impl Notifier {
    fn start(sb: &Sandbox, session: &SessionBus) -> Notifier {
        let log = sb.work_file("notify.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(sandbox_script())
            .args(["exec", &sb.name, "env"])
            .arg(format!("DBUS_SESSION_BUS_ADDRESS={}", session.address))
            .args(AS_NOBODY)
            .args(["/usr/bin/nm-multiwan", "-v", "notify"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start nm-multiwan notify");
        let n = Notifier { child, log };
        sb.wait_until(15, "notify listening", || {
            n.log_text().contains("waiting for nm-multiwan's daemon")
        });
        n
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- notify log ---\n{}", self.log_text());
        }
    }
}

/// What `nobody` receives of our interface on the system bus (`dbus-monitor` as a
/// plain subscriber: nobody may not eavesdrop); killed on drop.
struct Listener {
    child: Child,
    log: PathBuf,
}

impl Listener {
    fn start(sb: &Sandbox) -> Listener {
        let log = sb.work_file("listener.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(sandbox_script())
            .args(["exec", &sb.name])
            .args(AS_NOBODY)
            .args([
                "dbus-monitor",
                "--system",
                "type='signal',interface='net.nmmultiwan.Daemon1'",
            ])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start dbus-monitor");
        let l = Listener { child, log };
        sb.wait_until(10, "dbus-monitor subscribed", || {
            l.text().contains("NameAcquired")
        });
        l
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn calls(c: &Arc<Mutex<Vec<Call>>>) -> Vec<Call> {
    c.lock().unwrap().clone()
}

/// Waits until `n` calls were recorded, then a little longer to see that no more come.
fn exactly(c: &Arc<Mutex<Vec<Call>>>, n: usize, what: &str) -> Vec<Call> {
    wait_for(20, what, || {
        let got = calls(c);
        if got.len() >= n {
            Ok(())
        } else {
            Err(format!("{got:#?}"))
        }
    });
    // Three probe intervals and a reconcile: time enough for a duplicate to show.
    std::thread::sleep(Duration::from_secs(3));
    let got = calls(c);
    assert_eq!(got.len(), n, "{what}: {got:#?}");
    got
}

fn notifications_follow_uplink_health(fw: Fw) {
    require_root!();
    let sb = Sandbox::create_up(
        "ntfy",
        &["eth0:static:1", "wlan0:static:2"],
        Options {
            firewall: fw,
            config: Some(PROBE_CONFIG),
            dbus_policy: true,
            ..Default::default()
        },
    );
    let session = SessionBus::start(&sb);
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _server = runtime
        .block_on(async {
            zbus::connection::Builder::address(session.address.as_str())?
                .name("org.freedesktop.Notifications")?
                .serve_at(
                    "/org/freedesktop/Notifications",
                    Server {
                        calls: recorded.clone(),
                    },
                )?
                .build()
                .await
        })
        .expect("serve the stand-in notification server");
    let daemon = DaemonProcess::start(&sb);
    let notifier = Notifier::start(&sb, &session);
    let listener = Listener::start(&sb);

    // All is well: nothing to say.
    std::thread::sleep(Duration::from_secs(3));
    assert!(calls(&recorded).is_empty(), "{:#?}", calls(&recorded));

    // UplinksChanged sent by nobody: the policy refuses it (and notify listens to the
    // daemon's name only): nothing either.
    let mut spoof = AS_NOBODY.to_vec();
    spoof.extend([
        "dbus-send",
        "--system",
        "--type=signal",
        "/net/nmmultiwan/Daemon1",
        "net.nmmultiwan.Daemon1.UplinksChanged",
        "string:spoofed",
    ]);
    sb.host_ok(&spoof);
    std::thread::sleep(Duration::from_secs(1));
    assert!(calls(&recorded).is_empty(), "{:#?}", calls(&recorded));
    assert!(
        !notifier.log_text().contains("unreadable"),
        "{}",
        notifier.log_text()
    );

    // Cut: one notification, naming the uplink as NetworkManager knows it.
    cut_upstream(&sb, 2, true);
    let got = exactly(&recorded, 1, "one notification for the cut");
    assert_eq!(got[0].app_name, "nm-multiwan");
    assert_eq!(got[0].summary, "up-wlan0 lost its internet", "{got:#?}");
    assert!(
        got[0]
            .body
            .starts_with("All new connections go through up-eth0."),
        "{got:#?}"
    );
    assert_eq!(got[0].replaces_id, 0, "{got:#?}");
    // Anyone may receive the daemon's signal; nobody's own never went out.
    let heard = listener.text();
    assert!(
        heard.contains("member=UplinksChanged") && heard.contains("string \"unhealthy\""),
        "{heard}"
    );
    assert!(
        !heard.contains("spoofed"),
        "the policy let nobody's signal through: {heard}"
    );

    // Healed: one more, replacing it.
    cut_upstream(&sb, 2, false);
    let got = exactly(&recorded, 2, "one more notification for the repair");
    assert_eq!(got[1].summary, "up-wlan0 is back online", "{got:#?}");
    assert_eq!(
        got[1].body, "Balancing over up-eth0 and up-wlan0.",
        "{got:#?}"
    );
    assert_eq!(
        got[1].replaces_id, got[0].id,
        "replaces the first: {got:#?}"
    );

    // The connection goes down: it left.
    sb.down("up-wlan0");
    let got = exactly(&recorded, 3, "one notification for the departure");
    assert_eq!(got[2].summary, "up-wlan0 left", "{got:#?}");
    assert_eq!(
        got[2].body, "All new connections go through up-eth0.",
        "{got:#?}"
    );
    drop(notifier);
    drop(daemon);
}

on_both_backends!(notifications_follow_uplink_health);
