//! The conntrack client and the address keeper against a real kernel. Each test runs
//! on its own thread inside a fresh anonymous network namespace (the "host"), with
//! peers in further anonymous namespaces linked to it by veth pairs; real TCP and UDP
//! connections fill the host's conntrack table, nft rules mark some of them. The
//! namespaces go away with the test process: nothing outside them is touched.
//!
//! Root only: without root every test fails, saying so.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nm_multiwan::kernel::conntrack::{Conntrack, Entry, Filter};
use nm_multiwan::kernel::keeper::{self, DUMMY_NAME, Keeper};
use nm_multiwan::model::Family;

const MASK: u32 = 0x3f00_0000;
const UPLINK1: u32 = 0x0100_0000;
const UPLINK2: u32 = 0x0200_0000;
/// A bit another program uses, outside our mask.
const FOREIGN: u32 = 0x0000_4000;

/// Runs `test` inside a fresh network namespace, on a current-thread runtime.
fn in_netns<F, Fut>(name: &str, test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    assert!(
        unsafe { libc::geteuid() } == 0,
        "{name} needs root (it creates network namespaces and edits conntrack): run the tests as root"
    );
    let thread = std::thread::spawn(move || {
        // Only this thread (and the commands it spawns) moves.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        }
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        run(&["ip", "link", "set", "lo", "up"]);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(test());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Runs a command in the current thread's namespace; fails the test when it fails.
fn run(argv: &[&str]) -> String {
    output(Command::new(argv[0]).args(&argv[1..]), argv)
}

fn output(cmd: &mut Command, argv: &[&str]) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ip(args: &str) -> String {
    let argv: Vec<&str> = std::iter::once("ip")
        .chain(args.split_whitespace())
        .collect();
    run(&argv)
}

fn sysctl(key: &str, value: &str) {
    run(&["sysctl", "-qw", &format!("{key}={value}")]);
}

/// Loads an nft script in the current thread's namespace.
fn nft(script: &str) {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Another anonymous network namespace, alive as long as this handle (or a thread or
/// socket in it).
struct Peer {
    ns: File,
}

impl Peer {
    fn new() -> Peer {
        let ns = std::thread::spawn(|| {
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                panic!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
            }
            File::open("/proc/thread-self/ns/net").expect("opening the new namespace")
        })
        .join()
        .unwrap();
        let peer = Peer { ns };
        peer.ip("link set lo up");
        peer
    }

    /// A path to the namespace that `ip ... netns PATH` takes.
    fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.ns.as_raw_fd())
    }

    fn run(&self, argv: &[&str]) -> String {
        let fd = self.ns.as_raw_fd();
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]);
        // Between fork and exec: only async-signal-safe calls.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        output(&mut cmd, argv)
    }

    fn ip(&self, args: &str) -> String {
        let argv: Vec<&str> = std::iter::once("ip")
            .chain(args.split_whitespace())
            .collect();
        self.run(&argv)
    }

    fn sysctl(&self, key: &str, value: &str) {
        self.run(&["sysctl", "-qw", &format!("{key}={value}")]);
    }

    /// A TCP server on `addr` in this namespace, answering each line with the
    /// address it sees the client at and the line. Runs until the process ends.
    fn echo_server(&self, addr: SocketAddr) {
        let ns = self.ns.try_clone().unwrap();
        let (ready, bound) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                panic!("setns: {}", std::io::Error::last_os_error());
            }
            let listener = TcpListener::bind(addr);
            let listener = match listener {
                Ok(l) => {
                    ready.send(Ok(())).unwrap();
                    l
                }
                Err(e) => {
                    ready.send(Err(e)).unwrap();
                    return;
                }
            };
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let peer = stream.peer_addr().unwrap().ip();
                    let mut out = stream.try_clone().unwrap();
                    for line in BufReader::new(stream).lines() {
                        let Ok(line) = line else { break };
                        if writeln!(out, "{peer} {line}").is_err() {
                            break;
                        }
                    }
                });
            }
        });
        bound
            .recv()
            .unwrap()
            .unwrap_or_else(|e| panic!("echo server on {addr}: {e}"));
    }
}

/// Connects to an echo server from the host namespace (the calling thread's).
fn connect(server: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&server, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("connecting to {server}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream
}

/// Sends `line`, returns the server's answer (the address it saw us at, the line).
fn ask(stream: &mut TcpStream, line: &str) -> std::io::Result<String> {
    writeln!(stream, "{line}")?;
    let mut answer = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut answer)?;
    if answer.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(answer.trim_end().to_string())
}

/// The original tuple of a connection, as conntrack shows it.
type Flow = (u8, IpAddr, IpAddr, u16, u16);

fn flow_of(e: &Entry) -> Flow {
    (
        e.protocol,
        e.orig.src,
        e.orig.dst,
        e.orig.sport,
        e.orig.dport,
    )
}

fn tcp_flow(s: &TcpStream) -> Flow {
    let (l, p) = (s.local_addr().unwrap(), s.peer_addr().unwrap());
    (6, l.ip(), p.ip(), l.port(), p.port())
}

/// What the `conntrack` tool lists (args such as `--mark 0x1000000/0x3f000000`):
/// original tuple and mark of each entry, both families.
fn conntrack_tool(args: &[&str]) -> BTreeMap<Flow, u32> {
    let mut flows = BTreeMap::new();
    for family in ["ipv4", "ipv6"] {
        let mut argv = vec!["conntrack", "-L", "-f", family];
        argv.extend(args);
        for line in run(&argv).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let field = |key: &str| {
                words
                    .iter()
                    .find_map(|w| w.strip_prefix(key).and_then(|w| w.strip_prefix('=')))
                    .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
            };
            let protocol: u8 = words[1].parse().unwrap();
            let ports = if matches!(protocol, 6 | 17) {
                (
                    field("sport").parse().unwrap(),
                    field("dport").parse().unwrap(),
                )
            } else {
                (0, 0)
            };
            let flow = (
                protocol,
                field("src").parse().unwrap(),
                field("dst").parse().unwrap(),
                ports.0,
                ports.1,
            );
            flows.insert(flow, field("mark").parse().unwrap());
        }
    }
    flows
}

fn flows(entries: &[Entry]) -> BTreeSet<Flow> {
    let set: BTreeSet<Flow> = entries.iter().map(flow_of).collect();
    assert_eq!(set.len(), entries.len(), "duplicate entries: {entries:#?}");
    set
}

/// The host (this namespace) and one peer on a veth pair: 10.0.5.1 and fd00:5::1 here,
/// 10.0.5.2 and fd00:5::2 there, with echo servers on ports 7001 (marked for uplink 1,
/// plus another program's bit), 7002 (only the other program's bit) and 7003
/// (uplink 2) of both addresses.
fn host_and_peer() -> Peer {
    let peer = Peer::new();
    ip(&format!(
        "link add h0 type veth peer name p0 netns {}",
        peer.path()
    ));
    ip("addr add 10.0.5.1/24 dev h0");
    ip("addr add fd00:5::1/64 dev h0 nodad");
    ip("link set h0 up");
    peer.ip("addr add 10.0.5.2/24 dev p0");
    peer.ip("addr add fd00:5::2/64 dev p0 nodad");
    peer.ip("link set p0 up");
    for server in ["10.0.5.2", "[fd00:5::2]"] {
        for port in [7001, 7002, 7003] {
            peer.echo_server(format!("{server}:{port}").parse().unwrap());
        }
    }
    nft(&format!(
        "table inet t {{
            chain out {{
                type filter hook output priority 0;
                tcp dport 7001 ct mark set {:#x}
                tcp dport 7002 ct mark set {FOREIGN:#x}
                tcp dport 7003 ct mark set {UPLINK2:#x}
            }}
        }}",
        UPLINK1 | FOREIGN
    ));
    peer
}

/// `n` connections to each of the peer's servers, by port.
fn open_connections(n: usize) -> BTreeMap<u16, Vec<TcpStream>> {
    let mut by_port: BTreeMap<u16, Vec<TcpStream>> = BTreeMap::new();
    for server in ["10.0.5.2", "[fd00:5::2]"] {
        for port in [7001, 7002, 7003] {
            for _ in 0..n {
                let mut s = connect(format!("{server}:{port}").parse().unwrap());
                ask(&mut s, "hello").unwrap();
                by_port.entry(port).or_default().push(s);
            }
        }
    }
    by_port
}

fn tcp_flows(streams: &[TcpStream]) -> BTreeSet<Flow> {
    streams.iter().map(tcp_flow).collect()
}

#[test]
fn dump_filters_by_family_and_mark_like_the_conntrack_tool() {
    in_netns(
        "dump_filters_by_family_and_mark_like_the_conntrack_tool",
        || async {
            let _peer = host_and_peer();
            let conns = open_connections(3);
            let mut ct = Conntrack::open().unwrap();

            let marked = ct.dump(&Filter::mark(UPLINK1, MASK)).await.unwrap();
            assert_eq!(flows(&marked), tcp_flows(&conns[&7001]));
            assert!(marked.iter().all(|e| e.mark == UPLINK1 | FOREIGN));
            let tool = conntrack_tool(&["--mark", &format!("{UPLINK1:#x}/{MASK:#x}")]);
            assert_eq!(flows(&marked), tool.keys().copied().collect());
            assert_eq!(marked.len(), 6);

            // Per family.
            let marked6 = ct
                .dump(&Filter::mark(UPLINK1, MASK).family(Family::V6))
                .await
                .unwrap();
            assert_eq!(marked6.len(), 3);
            assert!(
                marked6
                    .iter()
                    .all(|e| e.family == Family::V6 && e.orig.src.is_ipv6())
            );
            let marked4 = ct
                .dump(&Filter::mark(UPLINK1, MASK).family(Family::V4))
                .await
                .unwrap();
            assert_eq!(flows(&marked4).len() + flows(&marked6).len(), 6);
            assert!(marked4.iter().all(|e| e.family == Family::V4));

            // The other uplink's, and everything, as the tool sees them.
            let uplink2 = ct.dump(&Filter::mark(UPLINK2, MASK)).await.unwrap();
            assert_eq!(flows(&uplink2), tcp_flows(&conns[&7003]));
            let all = ct.dump(&Filter::default()).await.unwrap();
            let tool_all = conntrack_tool(&[]);
            assert_eq!(flows(&all), tool_all.keys().copied().collect());
            for e in &all {
                assert_eq!(tool_all[&flow_of(e)], e.mark, "{e:?}");
                // Unanswered, untranslated, established: what the kernel says of ours.
                if conns[&7002].iter().any(|s| tcp_flow(s) == flow_of(e)) {
                    assert!(!e.status.src_nat());
                    assert_eq!((e.reply.src, e.reply.dst), (e.orig.dst, e.orig.src));
                }
            }

            // Counting by mark agrees with the tool, per family and in all.
            let mut expected: BTreeMap<u32, u64> = BTreeMap::new();
            for mark in tool_all.values() {
                *expected.entry(mark & MASK).or_default() += 1;
            }
            assert_eq!(ct.count_by_mark(None, MASK).await.unwrap(), expected);
            assert_eq!(expected[&UPLINK1], 6);
            assert_eq!(expected[&UPLINK2], 6);
            assert!(expected[&0] >= 6, "{expected:?}");
            let v6 = ct.count_by_mark(Some(Family::V6), MASK).await.unwrap();
            assert_eq!((v6[&UPLINK1], v6[&UPLINK2]), (3, 3));
        },
    );
}

#[test]
fn empty_table_and_no_tracking() {
    in_netns("empty_table_and_no_tracking", || async {
        // No rule needs conntrack in this namespace: the kernel tracks nothing here.
        let mut ct = Conntrack::open().unwrap();
        let _ = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send_to(b"x", "127.0.0.1:9");
        assert_eq!(ct.dump(&Filter::default()).await.unwrap(), []);
        assert_eq!(ct.count_by_mark(None, MASK).await.unwrap(), BTreeMap::new());
        assert_eq!(ct.delete(&Filter::mark(UPLINK1, MASK)).await.unwrap(), 0);
        assert_eq!(ct.delete_entries(&[]).await.unwrap(), 0);
    });
}

#[test]
fn delete_removes_exactly_the_marked_entries() {
    in_netns("delete_removes_exactly_the_marked_entries", || async {
        let _peer = host_and_peer();
        // A packet of a connection conntrack does not know is INVALID (no pickup in
        // the middle of a stream), and we reset it, as a host with a firewall would.
        // Not the reset itself: as invalid as what it answers, it would be dropped.
        sysctl("net.netfilter.nf_conntrack_tcp_loose", "0");
        nft("table inet t {
                chain out {
                    ct state invalid tcp flags & rst == 0 reject with tcp reset
                }
            }");
        let mut conns = open_connections(3);
        let mut ct = Conntrack::open().unwrap();
        let before = conntrack_tool(&[]);
        let uplink1: BTreeSet<Flow> = tcp_flows(&conns[&7001]);

        assert_eq!(ct.delete(&Filter::mark(UPLINK1, MASK)).await.unwrap(), 6);

        let after = conntrack_tool(&[]);
        let gone: BTreeSet<Flow> = before
            .keys()
            .filter(|f| !after.contains_key(f))
            .copied()
            .collect();
        assert_eq!(gone, uplink1);
        assert_eq!(after.len(), before.len() - 6);
        assert_eq!(ct.delete(&Filter::mark(UPLINK1, MASK)).await.unwrap(), 0);

        // The others still work, under the same entries.
        for port in [7002, 7003] {
            for s in conns.get_mut(&port).unwrap() {
                ask(s, "still there?").unwrap();
            }
        }
        assert_eq!(conntrack_tool(&[]), after);
        // A connection whose entry went is reset on its next packet.
        for s in conns.get_mut(&7001).unwrap() {
            let err = ask(s, "anyone?").expect_err("a connection without its entry answered");
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        }
    });
}

#[test]
fn delete_by_family_leaves_the_other_family() {
    in_netns("delete_by_family_leaves_the_other_family", || async {
        let _peer = host_and_peer();
        let conns = open_connections(2);
        let mut ct = Conntrack::open().unwrap();
        let filter = Filter::mark(UPLINK2, MASK).family(Family::V4);
        assert_eq!(ct.delete(&filter).await.unwrap(), 2);
        let left: BTreeSet<Flow> = ct
            .dump(&Filter::mark(UPLINK2, MASK))
            .await
            .unwrap()
            .iter()
            .map(flow_of)
            .collect();
        let v6: BTreeSet<Flow> = tcp_flows(&conns[&7003])
            .into_iter()
            .filter(|f| f.1.is_ipv6())
            .collect();
        assert_eq!(left, v6);
        assert_eq!(
            ct.dump(&Filter::mark(UPLINK1, MASK)).await.unwrap().len(),
            4
        );
    });
}

#[test]
fn delete_entries_one_by_one_checks_their_id() {
    in_netns("delete_entries_one_by_one_checks_their_id", || async {
        let _peer = host_and_peer();
        let conns = open_connections(2);
        let mut ct = Conntrack::open().unwrap();
        let mut entries = ct.dump(&Filter::mark(UPLINK2, MASK)).await.unwrap();
        assert_eq!(flows(&entries), tcp_flows(&conns[&7003]));
        // An entry of the same tuple but another id is another connection: untouched.
        let mut stale = entries.pop().unwrap();
        stale.id = stale.id.wrapping_add(1);
        assert_eq!(
            ct.delete_entries(std::slice::from_ref(&stale))
                .await
                .unwrap(),
            0
        );
        assert_eq!(ct.delete_entries(&entries).await.unwrap(), 3);
        // Already gone: nothing more to delete, and no error.
        assert_eq!(ct.delete_entries(&entries).await.unwrap(), 0);
        let left = ct.dump(&Filter::mark(UPLINK2, MASK)).await.unwrap();
        assert_eq!(flows(&left), [flow_of(&stale)].into());
        assert_eq!(
            ct.dump(&Filter::mark(UPLINK1, MASK)).await.unwrap().len(),
            4
        );
    });
}

/// A dump whose future is dropped midway (by a timeout around it, say) leaves the
/// kernel dumping into the socket, which refuses another dump until that one ends:
/// the next request must still work.
#[test]
fn an_interrupted_dump_does_not_break_the_next_request() {
    in_netns(
        "an_interrupted_dump_does_not_break_the_next_request",
        || async {
            let _peer = host_and_peer();
            let socket = UdpSocket::bind("10.0.5.1:0").unwrap();
            for port in 0..20000 {
                socket.send_to(b"x", ("10.0.5.2", 10000 + port)).unwrap();
            }
            let mut ct = Conntrack::open().unwrap();
            let everything = Filter::default();
            {
                let mut dump = std::pin::pin!(ct.dump(&everything));
                // The first poll sends the request once the socket is known writable,
                // the next ones read. Tokio's cooperative budget ends a poll after 128
                // reads, and 20000 entries take about a thousand datagrams.
                for _ in 0..3 {
                    assert!(
                        futures::poll!(&mut dump).is_pending(),
                        "the dump ended before it could be interrupted: the test proves nothing"
                    );
                    tokio::task::yield_now().await;
                }
            }
            let all = ct.dump(&everything).await.unwrap();
            assert_eq!(flows(&all).len(), 20000);
            assert_eq!(ct.count_by_mark(None, MASK).await.unwrap()[&0], 20000);
        },
    );
}

/// 1000 UDP flows, half of them marked; prints what dumping and deleting them costs.
#[test]
fn thousand_flows() {
    in_netns("thousand_flows", || async {
        let _peer = host_and_peer();
        nft(&format!(
            "table inet t {{
                chain out {{
                    udp dport 20000-20499 ct mark set {UPLINK1:#x}
                }}
            }}"
        ));
        let socket = UdpSocket::bind("10.0.5.1:0").unwrap();
        for port in 20000..21000 {
            socket.send_to(b"x", ("10.0.5.2", port)).unwrap();
        }
        let mut ct = Conntrack::open().unwrap();
        let filter = Filter::mark(UPLINK1, MASK);

        let t = Instant::now();
        let marked = ct.dump(&filter).await.unwrap();
        let filtered_dump = t.elapsed();
        assert_eq!(marked.len(), 500);
        assert!(
            marked
                .iter()
                .all(|e| e.protocol == 17 && e.orig.dport < 20500)
        );

        let t = Instant::now();
        let all = ct.dump(&Filter::default()).await.unwrap();
        let full_dump = t.elapsed();
        assert!(all.len() >= 1000, "{}", all.len());

        let t = Instant::now();
        let counts = ct.count_by_mark(None, MASK).await.unwrap();
        let count = t.elapsed();
        assert_eq!(counts[&UPLINK1], 500);

        let t = Instant::now();
        let tool = run(&[
            "conntrack",
            "-L",
            "--mark",
            &format!("{UPLINK1:#x}/{MASK:#x}"),
        ]);
        let tool_dump = t.elapsed();
        assert_eq!(tool.lines().count(), 500);

        // One by one for half of them, the kernel's flush for the rest.
        let t = Instant::now();
        assert_eq!(ct.delete_entries(&marked[..250]).await.unwrap(), 250);
        let one_by_one = t.elapsed();
        let t = Instant::now();
        assert_eq!(ct.delete(&filter).await.unwrap(), 250);
        let flush = t.elapsed();
        assert_eq!(ct.dump(&filter).await.unwrap(), []);
        assert_eq!(
            ct.count_by_mark(None, MASK).await.unwrap()[&0],
            all.len() as u64 - 500
        );

        eprintln!(
            "{} entries, 500 marked: filtered dump {filtered_dump:?}, full dump \
             {full_dump:?}, count by mark {count:?}, `conntrack -L --mark` {tool_dump:?}; \
             deleting 250 one by one {one_by_one:?}, 250 by dump + filtered flush {flush:?}",
            all.len()
        );
    });
}

#[test]
fn keeper_is_idempotent_and_touches_only_its_interface() {
    in_netns(
        "keeper_is_idempotent_and_touches_only_its_interface",
        || async {
            let _peer = host_and_peer();
            // Everything but what belongs to nmmw0 (the kernel's local routes of its
            // addresses).
            let snapshot = || {
                let mut all = vec![
                    ip("-d addr show dev h0"),
                    ip("rule show"),
                    ip("-6 rule show"),
                ];
                for table in ["route show table all", "-6 route show table all"] {
                    all.extend(
                        ip(table)
                            .lines()
                            .filter(|l| !l.contains(DUMMY_NAME))
                            .map(String::from),
                    );
                }
                all
            };
            let before = snapshot();
            let keeper = Keeper::connect().await.unwrap();
            assert!(keeper.kept().await.unwrap().is_empty());
            keeper.release("10.0.1.2".parse().unwrap()).await.unwrap();
            keeper.remove_dummy().await.unwrap();

            let index = keeper.ensure_dummy().await.unwrap();
            assert_eq!(keeper.ensure_dummy().await.unwrap(), index);
            let link = ip(&format!("-d link show dev {DUMMY_NAME}"));
            assert!(link.contains(",UP"), "{link}");
            assert!(link.contains("addrgenmode none"), "{link}");
            assert!(
                keeper.kept().await.unwrap().is_empty(),
                "no link-local either"
            );

            let v4: IpAddr = "10.0.1.2".parse().unwrap();
            let v6: IpAddr = "2001:db8:1::2".parse().unwrap();
            for _ in 0..2 {
                keeper.keep(v4).await.unwrap();
                keeper.keep(v6).await.unwrap();
            }
            let kept: BTreeSet<IpAddr> = keeper.kept().await.unwrap().into_iter().collect();
            assert_eq!(kept, [v4, v6].into());
            let addrs = ip(&format!("addr show dev {DUMMY_NAME}"));
            assert!(addrs.contains("inet 10.0.1.2/32 scope host"), "{addrs}");
            let line6 = addrs
                .lines()
                .find(|l| l.contains("inet6 2001:db8:1::2/128"))
                .unwrap_or_else(|| panic!("{addrs}"));
            for word in ["nodad", "noprefixroute", "deprecated"] {
                assert!(line6.contains(word), "{line6}");
            }
            assert!(
                addrs.contains("valid_lft forever preferred_lft 0sec"),
                "{addrs}"
            );
            // Nothing but the kernel's local routes of its own addresses.
            assert!(
                !ip("route show table main").contains(DUMMY_NAME)
                    && !ip("-6 route show table main").contains(DUMMY_NAME)
            );
            assert_eq!(snapshot(), before);

            for _ in 0..2 {
                keeper.release(v4).await.unwrap();
            }
            assert_eq!(keeper.kept().await.unwrap(), [v6]);
            keeper.release(v6).await.unwrap();
            assert!(keeper.kept().await.unwrap().is_empty());
            for _ in 0..2 {
                keeper.remove_dummy().await.unwrap();
            }
            assert!(!ip("link show").contains(DUMMY_NAME));
            assert_eq!(snapshot(), before);
        },
    );
}

/// The departure of the primary uplink, end to end. The host has uplinks A
/// (10.0.1.2, fd01::2, the primary: main default route of metric 100) and B (10.0.2.2,
/// fd02::2, metric 200) to routers RA and RB, both of which reach the server S
/// (10.0.9.1, fd09::1). Connections to the server take A's address as their source,
/// then a mark sends them through B, masqueraded there, as nm-multiwan's rules do.
struct Departure {
    family: Family,
    _peers: Vec<Peer>,
}

impl Departure {
    fn new(family: Family) -> Departure {
        let (ra, rb, s) = (Peer::new(), Peer::new(), Peer::new());
        let link = |here: &str, there: &str, peer: &Peer| {
            ip(&format!(
                "link add {here} type veth peer name {there} netns {}",
                peer.path()
            ));
            ip(&format!("link set dev {here} up"));
            peer.ip(&format!("link set dev {there} up"));
        };
        let between = |a: &Peer, an: &str, b: &Peer, bn: &str| {
            a.ip(&format!(
                "link add {an} type veth peer name {bn} netns {}",
                b.path()
            ));
            a.ip(&format!("link set dev {an} up"));
            b.ip(&format!("link set dev {bn} up"));
        };
        link("va", "ra0", &ra);
        link("vb", "rb0", &rb);
        between(&ra, "ra1", &s, "sa");
        between(&rb, "rb1", &s, "sb");
        for r in [&ra, &rb] {
            r.sysctl("net.ipv4.ip_forward", "1");
            r.sysctl("net.ipv6.conf.all.forwarding", "1");
        }
        // Addresses: 10.0.N.x and fd0N::x, N = 1 (A), 2 (B), 3 (RA-S), 4 (RB-S), 9 (S).
        let both = |n: u8, host: u8| {
            [
                format!("10.0.{n}.{host}/24"),
                format!("fd0{n}::{host}/64 nodad"),
            ]
        };
        for a in both(1, 2) {
            ip(&format!("addr add {a} dev va"));
        }
        for a in both(2, 2) {
            ip(&format!("addr add {a} dev vb"));
        }
        for (peer, iface, n, host) in [
            (&ra, "ra0", 1, 1),
            (&ra, "ra1", 3, 1),
            (&rb, "rb0", 2, 1),
            (&rb, "rb1", 4, 1),
            (&s, "sa", 3, 2),
            (&s, "sb", 4, 2),
        ] {
            for a in both(n, host) {
                peer.ip(&format!("addr add {a} dev {iface}"));
            }
        }
        s.ip("addr add 10.0.9.1/32 dev lo");
        s.ip("addr add fd09::1/128 dev lo");
        for (router, s_addr) in [(&ra, 3), (&rb, 4)] {
            router.ip(&format!("route add 10.0.9.1 via 10.0.{s_addr}.2"));
            router.ip(&format!("-6 route add fd09::1 via fd0{s_addr}::2"));
        }
        for (n, router) in [(1, 3), (2, 4)] {
            s.ip(&format!("route add 10.0.{n}.0/24 via 10.0.{router}.1"));
            s.ip(&format!("-6 route add fd0{n}::/64 via fd0{router}::1"));
        }
        // As NetworkManager leaves them: a default route per uplink, the primary's first.
        ip("route add default via 10.0.1.1 metric 100");
        ip("route add default via 10.0.2.1 metric 200");
        ip("-6 route add default via fd01::1 metric 100");
        ip("-6 route add default via fd02::1 metric 200");
        // As nm-multiwan does: uplink B's mark routes through B, masqueraded there.
        for v in ["-4", "-6"] {
            ip(&format!(
                "{v} route add default via {} table 102",
                if v == "-4" { "10.0.2.1" } else { "fd02::1" }
            ));
            ip(&format!(
                "{v} rule add fwmark {UPLINK2:#x}/{MASK:#x} table 102 priority 100"
            ));
        }
        nft(&format!(
            "table inet t {{
                chain out {{
                    type route hook output priority mangle;
                    ct state new tcp dport 7 ct mark set {UPLINK2:#x}
                    meta mark set ct mark
                }}
                chain post {{
                    type nat hook postrouting priority srcnat;
                    oifname \"vb\" masquerade
                }}
            }}"
        ));
        let server = Departure::server(family);
        s.echo_server(server);
        Departure {
            family,
            _peers: vec![ra, rb, s],
        }
    }

    fn server(family: Family) -> SocketAddr {
        match family {
            Family::V4 => "10.0.9.1:7".parse().unwrap(),
            Family::V6 => "[fd09::1]:7".parse().unwrap(),
        }
    }

    fn primary(&self) -> IpAddr {
        match self.family {
            Family::V4 => "10.0.1.2".parse().unwrap(),
            Family::V6 => "fd01::2".parse().unwrap(),
        }
    }

    fn masqueraded(&self) -> IpAddr {
        match self.family {
            Family::V4 => "10.0.2.2".parse().unwrap(),
            Family::V6 => "fd02::2".parse().unwrap(),
        }
    }

    /// A connection to the server from the primary's address, out through B.
    fn connect(&self) -> TcpStream {
        let mut conn = connect(Departure::server(self.family));
        assert_eq!(conn.local_addr().unwrap().ip(), self.primary());
        let answer = ask(&mut conn, "hello").unwrap();
        assert_eq!(answer, format!("{} hello", self.masqueraded()));
        conn
    }

    /// What NetworkManager does when the primary leaves: its default route and its
    /// address go.
    fn primary_leaves(&self) {
        match self.family {
            Family::V4 => {
                ip("route del default via 10.0.1.1");
                ip("addr del 10.0.1.2/24 dev va");
            }
            Family::V6 => {
                ip("-6 route del default via fd01::1");
                ip("addr del fd01::2/64 dev va");
            }
        }
    }
}

fn departure_stalls_without_keeper(family: Family) {
    let d = Departure::new(family);
    let mut conn = d.connect();
    d.primary_leaves();
    match ask(&mut conn, "still there?") {
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
        Ok(answer) => panic!("the connection survived without the keeper: {answer}"),
    }
}

async fn departure_survives_with_keeper(family: Family) {
    let d = Departure::new(family);
    let mut conn = d.connect();
    let mut ct = Conntrack::open().unwrap();
    let keeper = Keeper::connect().await.unwrap();

    d.primary_leaves();
    let departed = [d.primary()];
    let entries = ct.dump(&Filter::default().family(family)).await.unwrap();
    let keep = keeper::to_keep(&departed, &entries, MASK);
    assert_eq!(keep, departed.into());
    for addr in &keep {
        keeper.keep(*addr).await.unwrap();
    }

    let answer = ask(&mut conn, "still there?").expect("the connection stalled");
    assert_eq!(answer, format!("{} still there?", d.masqueraded()));
    // New connections do not take the kept address.
    let mut new = connect(Departure::server(family));
    assert_eq!(new.local_addr().unwrap().ip(), d.masqueraded());
    ask(&mut new, "new").unwrap();
    drop(new);

    // Once no connection uses it, it goes: closed (and its entry, which would keep
    // the address for the two minutes of TIME_WAIT, deleted).
    drop(conn);
    std::thread::sleep(Duration::from_millis(300));
    ct.delete(&Filter::mark(UPLINK2, MASK)).await.unwrap();
    let entries = ct.dump(&Filter::default()).await.unwrap();
    assert_eq!(keeper::to_keep(&departed, &entries, MASK), BTreeSet::new());
    keeper.release(d.primary()).await.unwrap();
    assert!(keeper.kept().await.unwrap().is_empty());
    keeper.remove_dummy().await.unwrap();
}

#[test]
fn ipv4_departure_stalls_without_keeper() {
    in_netns("ipv4_departure_stalls_without_keeper", || async {
        departure_stalls_without_keeper(Family::V4)
    });
}

#[test]
fn ipv4_departure_survives_with_keeper() {
    in_netns("ipv4_departure_survives_with_keeper", || {
        departure_survives_with_keeper(Family::V4)
    });
}

#[test]
fn ipv6_departure_stalls_without_keeper() {
    in_netns("ipv6_departure_stalls_without_keeper", || async {
        departure_stalls_without_keeper(Family::V6)
    });
}

#[test]
fn ipv6_departure_survives_with_keeper() {
    in_netns("ipv6_departure_survives_with_keeper", || {
        departure_survives_with_keeper(Family::V6)
    });
}
