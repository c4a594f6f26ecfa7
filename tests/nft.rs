//! The native nf_tables client against a real kernel, checked with `nft` itself: each
//! test runs on its own thread inside fresh, anonymous network and mount namespaces,
//! so nothing outside is touched and everything dies with the thread.
//!
//! The reference tests build rulesets through our API and compare `nft list` of them
//! with `nft list` of the same rulesets loaded by `nft -f` from text: a wrong encoding
//! shows as a difference (or as a refusal by the kernel).
//!
//! Root only: without root every test fails, saying so.

use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nm_multiwan::kernel::nft::{
    self, Batch, Chain, ChainKind, CmpOp, CtDirection, CtKey, DataType, DynsetOp, Element, Error,
    Expr, Family, FibFlags, FibResult, Hook, Key, KeyType, MetaKey, NatKind, Nft, NumgenMode,
    PayloadBase, Policy, Reg, Reject, Rule, Set, SetData, SetRef, SocketKey, Table, TableContents,
    Verdict, matches, nat_flags, priority, value,
};

/// Runs `test` in fresh network and mount namespaces, with `lo` up and an empty tmpfs
/// on /sys/fs/cgroup (where `nft` resolves `socket cgroupv2` paths).
fn in_netns(name: &str, test: impl FnOnce() + Send + 'static) {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "{name}: needs root (network namespaces and nf_tables); run the nf_tables tests as root: \
         sudo cargo test --test nft"
    );
    let thread = std::thread::spawn(move || {
        // Only this thread (and the commands it starts) moves.
        if unsafe { libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) } != 0 {
            panic!("unshare: {}", std::io::Error::last_os_error());
        }
        let root = c"/";
        let cgroup = c"/sys/fs/cgroup";
        let tmpfs = c"tmpfs";
        unsafe {
            assert_eq!(
                libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null()
                ),
                0,
                "making mounts private: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(
                libc::mount(
                    tmpfs.as_ptr(),
                    cgroup.as_ptr(),
                    tmpfs.as_ptr(),
                    0,
                    std::ptr::null()
                ),
                0,
                "mounting a tmpfs on /sys/fs/cgroup: {}",
                std::io::Error::last_os_error()
            );
        }
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        run("ip", &["link", "set", "lo", "up"], None);
        test();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Runs a command (with `stdin` if given) and returns its stdout; fails the test when
/// the command fails.
fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn nft_f(text: &str) {
    run("nft", &["-f", "-"], Some(text));
}

fn nft_list(family: &str, table: &str) -> String {
    run("nft", &["list", "table", family, table], None)
}

/// `nft list` of a table, named `as_name`, with counter values zeroed.
fn normalised(family: &str, table: &str, as_name: &str) -> String {
    let text = nft_list(family, table);
    let mut out = String::new();
    for line in text.lines() {
        let line = if line.starts_with("table ") {
            format!("table {family} {as_name} {{")
        } else {
            zero_counters(line)
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn zero_counters(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        out.push(words[i].to_string());
        if (words[i] == "packets" || words[i] == "bytes") && i + 1 < words.len() {
            out.push("N".into());
            i += 1;
        }
        i += 1;
    }
    out.join(" ")
}

/// Loads `text` (a table named `reference`) with `nft -f`, commits `ours` through the
/// API, and compares both as `nft list` prints them.
fn assert_same_as_nft(family: Family, reference: &str, ours: &TableContents) {
    nft_f(reference);
    let mut nft = Nft::new().unwrap();
    let mut batch = Batch::new();
    batch.replace_table(ours).unwrap();
    nft.commit(&batch).unwrap();
    let fam = family.to_string();
    let expected = normalised(&fam, "reference", &ours.table.name);
    let got = normalised(&fam, &ours.table.name, &ours.table.name);
    if expected != got {
        let diff: Vec<String> = expected
            .lines()
            .zip(got.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("nft -f: {a}\nours:   {b}"))
            .collect();
        panic!(
            "nft lists our table differently:\n{}\n--- nft -f:\n{expected}\n--- ours:\n{got}",
            diff.join("\n")
        );
    }
}

const MARK_MASK: u32 = 0x3f00_0000;

fn mark(uplink: u32) -> u32 {
    uplink << 24
}

/// The rules of chain `to_N`: mark the packet and the connection.
fn to_uplink(n: u32) -> Vec<Rule> {
    let chain = format!("to_{n}");
    vec![
        Rule::new(
            &chain,
            vec![
                Expr::immediate(Reg::R1, value::u32_host(mark(n))),
                Expr::meta_set(MetaKey::Mark, Reg::R1),
            ],
        ),
        Rule::new(&chain, ct_mark_set(n)),
        Rule::new(&chain, vec![Expr::counter()]),
    ]
}

/// `ct mark set ct mark & 0xc0ffffff | MARK`.
fn ct_mark_set(n: u32) -> Vec<Expr> {
    vec![
        Expr::ct(CtKey::Mark, Reg::R1),
        Expr::bitwise_u32(Reg::R1, 0xc0ff_ffff, mark(n)),
        Expr::ct_set(CtKey::Mark, Reg::R1),
    ]
}

fn rule(chain: &str, parts: &[Vec<Expr>]) -> Rule {
    Rule::new(chain, parts.concat())
}

fn goto(chain: &str) -> Vec<Expr> {
    vec![Expr::verdict(Verdict::Goto(chain.into()))]
}

fn ret() -> Vec<Expr> {
    vec![Expr::verdict(Verdict::Return)]
}

/// The representative ruleset of the backend, as `nft` syntax; `CGROUP` stands for the
/// socket cgroup path.
const REPRESENTATIVE: &str = r#"
table inet reference {
  comment "nm-multiwan plan=abc"
  set exclude4 { type ipv4_addr; flags interval; elements = { 10.0.1.0/24, 10.0.2.0/24 } }
  set exclude6 { type ipv6_addr; flags interval; elements = { fe80::/10, ff00::/8 } }
  map round_tcp { typeof numgen inc mod 3 : verdict; elements = { 0 : goto to_1, 1 : goto to_2, 2 : goto to_1 } }
  map save { type mark : verdict; elements = { 0x01000000 : goto to_1, 0x02000000 : goto to_2 } }
  map inbound { type ifname : verdict; elements = { "eth0" : goto in_1 } }
  set masq { type ifname . mark; elements = { "eth0" . 0x01000000 } }
  map sticky_1 { type ipv4_addr : mark; flags dynamic,timeout; timeout 10m; }
  chain to_1 { meta mark set 0x01000000; ct mark set ct mark & 0xc0ffffff | 0x01000000; counter; }
  chain to_2 { meta mark set 0x02000000; ct mark set ct mark & 0xc0ffffff | 0x02000000; counter; }
  chain in_1 { ct mark set ct mark & 0xc0ffffff | 0x01000000; }
  chain output {
    type route hook output priority mangle; policy accept;
    meta mark & 0x3f000000 != 0 meta mark & 0x3f000000 vmap @save
    meta mark != 0 return
    meta mark set ct mark & 0x3f000000
    ct state != new return
    fib daddr type { local, broadcast, multicast } return
    ip daddr @exclude4 return
    ip6 daddr @exclude6 return
    meta nfproto ipv6 meta l4proto ipv6-icmp return
    ip saddr 10.0.1.2 goto to_1
    ip daddr 192.0.2.53 udp dport 53 goto to_1
    meta skuid 1000 tcp dport { 443, 8000-8100 } goto to_1
    socket cgroupv2 level 2 "CGROUP" goto to_1
    meta mark set ip daddr map @sticky_1 meta mark != 0 update @sticky_1 { ip daddr : meta mark } return
    meta l4proto tcp numgen inc mod 3 vmap @round_tcp
    meta l4proto tcp update @sticky_1 { ip daddr timeout 10m : meta mark }
    counter drop
  }
  chain prerouting { type filter hook prerouting priority mangle; policy accept; iifname vmap @inbound; }
  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
    oifname . meta mark & 0x1f000000 @masq masquerade; }
}
"#;

/// The representative ruleset through our API. `cgroup` is the socket cgroup's id.
fn representative(name: &str, comment: &str, cgroup: u64) -> TableContents {
    let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
    let sets = vec![
        Set::new("exclude4", KeyType::single(DataType::Ipv4Addr))
            .interval()
            .with_elements(vec![
                Element::ipv4_prefix(v4("10.0.1.0"), 24),
                Element::ipv4_prefix(v4("10.0.2.0"), 24),
            ]),
        Set::new("exclude6", KeyType::single(DataType::Ipv6Addr))
            .interval()
            .with_elements(vec![
                Element::ipv6_prefix(v6("fe80::"), 10),
                Element::ipv6_prefix(v6("ff00::"), 8),
            ]),
        Set::map(
            "round_tcp",
            KeyType::single(DataType::Numgen {
                mode: NumgenMode::Incremental,
                modulus: 3,
                offset: 0,
            }),
            SetData::Verdict,
        )
        .with_elements(vec![
            Element::u32_host(0).verdict(Verdict::Goto("to_1".into())),
            Element::u32_host(1).verdict(Verdict::Goto("to_2".into())),
            Element::u32_host(2).verdict(Verdict::Goto("to_1".into())),
        ]),
        Set::map("save", KeyType::single(DataType::Mark), SetData::Verdict).with_elements(vec![
            Element::u32_host(mark(1)).verdict(Verdict::Goto("to_1".into())),
            Element::u32_host(mark(2)).verdict(Verdict::Goto("to_2".into())),
        ]),
        Set::map(
            "inbound",
            KeyType::single(DataType::Ifname),
            SetData::Verdict,
        )
        .with_elements(vec![
            Element::ifname("eth0").verdict(Verdict::Goto("in_1".into())),
        ]),
        Set::new(
            "masq",
            KeyType::concat(vec![DataType::Ifname, DataType::Mark]),
        )
        .with_elements(vec![Element::concat(&[
            &value::ifname("eth0"),
            &value::u32_host(mark(1)),
        ])]),
        Set::map(
            "sticky_1",
            KeyType::single(DataType::Ipv4Addr),
            SetData::Value(DataType::Mark),
        )
        .dynamic()
        .with_timeout(Duration::from_secs(600)),
    ];
    let chains = vec![
        Chain::regular("to_1"),
        Chain::regular("to_2"),
        Chain::regular("in_1"),
        Chain::base(
            "output",
            ChainKind::Route,
            Hook::Output,
            priority::MANGLE,
            Policy::Accept,
        ),
        Chain::base(
            "prerouting",
            ChainKind::Filter,
            Hook::Prerouting,
            priority::MANGLE,
            Policy::Accept,
        ),
        Chain::base(
            "postrouting",
            ChainKind::Nat,
            Hook::Postrouting,
            priority::SRCNAT,
            Policy::Accept,
        ),
    ];
    let mark_masked = || {
        vec![
            Expr::meta(MetaKey::Mark, Reg::R1),
            Expr::bitwise_u32(Reg::R1, MARK_MASK, 0),
        ]
    };
    let fib_types = Set::new("", KeyType::single(DataType::FibAddrType)).with_elements(vec![
        Element::u32_host(value::RTN_LOCAL),
        Element::u32_host(value::RTN_BROADCAST),
        Element::u32_host(value::RTN_MULTICAST),
    ]);
    let ports = Set::new("", KeyType::single(DataType::InetService))
        .interval()
        .with_elements(vec![Element::port(443), Element::port_range(8000, 8100)]);
    let out = "output";
    let mut rules = Vec::new();
    rules.extend(to_uplink(1));
    rules.extend(to_uplink(2));
    rules.push(Rule::new("in_1", ct_mark_set(1)));
    rules.extend([
        rule(
            out,
            &[
                mark_masked(),
                vec![Expr::cmp(CmpOp::Neq, Reg::R1, value::u32_host(0))],
                mark_masked(),
                vec![Expr::vmap("save", Reg::R1)],
            ],
        ),
        rule(out, &[matches::mark(u32::MAX, CmpOp::Neq, 0), ret()]),
        rule(
            out,
            &[vec![
                Expr::ct(CtKey::Mark, Reg::R1),
                Expr::bitwise_u32(Reg::R1, MARK_MASK, 0),
                Expr::meta_set(MetaKey::Mark, Reg::R1),
            ]],
        ),
        rule(out, &[matches::ct_state(value::CT_STATE_NEW, false), ret()]),
        rule(
            out,
            &[
                vec![
                    Expr::Fib {
                        flags: FibFlags::DADDR,
                        result: FibResult::AddrType,
                        dreg: Reg::R1,
                    },
                    Expr::lookup_anonymous(fib_types, Reg::R1),
                ],
                ret(),
            ],
        ),
        rule(out, &[matches::ip_daddr_in("exclude4"), ret()]),
        rule(out, &[matches::ip6_daddr_in("exclude6"), ret()]),
        rule(
            out,
            &[
                matches::nfproto(value::NFPROTO_IPV6),
                matches::l4proto(value::IPPROTO_ICMPV6),
                ret(),
            ],
        ),
        rule(out, &[matches::ip_saddr(v4("10.0.1.2")), goto("to_1")]),
        rule(
            out,
            &[
                matches::ip_daddr(v4("192.0.2.53")),
                matches::dport(value::IPPROTO_UDP, 53),
                goto("to_1"),
            ],
        ),
        rule(
            out,
            &[
                matches::skuid(1000),
                matches::l4proto(value::IPPROTO_TCP),
                vec![
                    Expr::th_dport(Reg::R1),
                    Expr::lookup_anonymous(ports, Reg::R1),
                ],
                goto("to_1"),
            ],
        ),
        rule(out, &[matches::cgroupv2(2, cgroup), goto("to_1")]),
        rule(
            out,
            &[
                matches::nfproto(value::NFPROTO_IPV4),
                vec![
                    Expr::ip_daddr(Reg::R1),
                    Expr::map("sticky_1", Reg::R1, Reg::R1),
                    Expr::meta_set(MetaKey::Mark, Reg::R1),
                ],
                matches::mark(u32::MAX, CmpOp::Neq, 0),
                vec![
                    Expr::ip_daddr(Reg::R1),
                    Expr::meta(MetaKey::Mark, Reg::R2),
                    Expr::Dynset {
                        op: DynsetOp::Update,
                        set: "sticky_1".into(),
                        sreg_key: Reg::R1,
                        sreg_data: Some(Reg::R2),
                        timeout: None,
                    },
                ],
                ret(),
            ],
        ),
        rule(
            out,
            &[
                matches::l4proto(value::IPPROTO_TCP),
                vec![
                    Expr::Numgen {
                        mode: NumgenMode::Incremental,
                        modulus: 3,
                        offset: 0,
                        dreg: Reg::R1,
                    },
                    Expr::vmap("round_tcp", Reg::R1),
                ],
            ],
        ),
        rule(
            out,
            &[
                matches::l4proto(value::IPPROTO_TCP),
                matches::nfproto(value::NFPROTO_IPV4),
                vec![
                    Expr::ip_daddr(Reg::R1),
                    Expr::meta(MetaKey::Mark, Reg::R2),
                    Expr::Dynset {
                        op: DynsetOp::Update,
                        set: "sticky_1".into(),
                        sreg_key: Reg::R1,
                        sreg_data: Some(Reg::R2),
                        timeout: Some(Duration::from_secs(600)),
                    },
                ],
            ],
        ),
        rule(out, &[vec![Expr::counter(), Expr::verdict(Verdict::Drop)]]),
        Rule::new(
            "prerouting",
            vec![
                Expr::meta(MetaKey::Iifname, Reg::R1),
                Expr::vmap("inbound", Reg::R1),
            ],
        ),
        Rule::new(
            "postrouting",
            vec![
                Expr::meta(MetaKey::Oifname, Reg::R1),
                Expr::meta(MetaKey::Mark, Reg::R2),
                Expr::bitwise_u32(Reg::R2, 0x1f00_0000, 0),
                Expr::lookup("masq", Reg::R1),
                Expr::Masquerade {
                    flags: 0,
                    proto_min: None,
                    proto_max: None,
                },
            ],
        ),
    ]);
    TableContents {
        table: Table::new(Family::Inet, name).with_comment(comment),
        chains,
        sets,
        rules,
    }
}

/// A cgroup directory `nft` resolves `"nm-multiwan/via-eth0"` to (on the test's tmpfs),
/// and its id.
fn cgroup_dir() -> u64 {
    let dir = "/sys/fs/cgroup/nm-multiwan/via-eth0";
    std::fs::create_dir_all(dir).unwrap();
    std::fs::metadata(dir).unwrap().ino()
}

#[test]
fn representative_ruleset_lists_as_nft_loads_it() {
    in_netns("representative_ruleset_lists_as_nft_loads_it", || {
        let id = cgroup_dir();
        let text = REPRESENTATIVE.replace("CGROUP", "nm-multiwan/via-eth0");
        assert_same_as_nft(
            Family::Inet,
            &text,
            &representative("nm-multiwan", "nm-multiwan plan=abc", id),
        );
        // The comparison sees every kind: guard against a vacuous listing.
        let listed = nft_list("inet", "nm-multiwan");
        for needle in [
            "vmap @save",
            "typeof numgen inc mod 3 : verdict",
            "fib daddr type { local, broadcast, multicast }",
            "tcp dport { 443, 8000-8100 }",
            "socket cgroupv2 level 2 \"nm-multiwan/via-eth0\"",
            "update @sticky_1 { ip daddr timeout 10m : meta mark }",
            "oifname . meta mark & 0x1f000000 @masq masquerade",
            "elements = { fe80::/10",
            "comment \"nm-multiwan plan=abc\"",
        ] {
            assert!(listed.contains(needle), "{needle:?} missing in:\n{listed}");
        }
    });
}

const EXTRA: &str = r#"
table inet reference {
  set ports { type ipv4_addr . inet_service; flags interval; elements = { 10.0.0.0/8 . 80-90, 192.168.1.1 . 443 } }
  chain post { type nat hook postrouting priority srcnat; policy accept;
    oifname "eth1" snat ip to 192.0.2.1
    oifname "eth2" snat ip6 to 2001:db8::1
    masquerade random,persistent
  }
  chain pre { type nat hook prerouting priority dstnat; policy accept;
    tcp dport 8080 dnat ip to 10.0.0.2:80
  }
  chain f { type filter hook input priority filter; policy drop;
    tcp dport 23 reject with tcp reset
    udp dport 24 reject
    ip protocol udp reject with icmp type host-unreachable
    log prefix "nmmw: " level info
    log group 2
    ct direction original meta skgid 100 accept
    icmpv6 type echo-request accept
    ct state established,related accept
    socket transparent 1 socket mark 0x00000001 accept
    fib saddr . iif oif missing drop
    fib daddr oif "lo" accept
    meta mark set numgen random mod 4 offset 1
    iifname "eth*" accept
    th dport 53 accept
    ip daddr != 10.1.0.0/16 accept
    ip saddr . tcp dport @ports accept
    ip6 saddr ::1 accept
    tcp sport < 1024 accept
    meta l4proto tcp ct original proto-dst 22 jump sub
  }
  chain sub { continue; }
}
"#;

/// The expressions the backend may need beyond the representative ruleset.
fn extra(name: &str) -> TableContents {
    let accept = || vec![Expr::verdict(Verdict::Accept)];
    let f = "f";
    let rules = vec![
        rule(
            "post",
            &[
                matches::ifname(MetaKey::Oifname, "eth1"),
                vec![
                    Expr::immediate(Reg::R1, value::ipv4(Ipv4Addr::new(192, 0, 2, 1))),
                    Expr::Nat {
                        kind: NatKind::Snat,
                        family: Family::Ip,
                        addr_min: Some(Reg::R1),
                        addr_max: None,
                        proto_min: None,
                        proto_max: None,
                        flags: 0,
                    },
                ],
            ],
        ),
        rule(
            "post",
            &[
                matches::ifname(MetaKey::Oifname, "eth2"),
                vec![
                    Expr::immediate(Reg::R1, value::ipv6("2001:db8::1".parse().unwrap())),
                    Expr::Nat {
                        kind: NatKind::Snat,
                        family: Family::Ip6,
                        addr_min: Some(Reg::R1),
                        addr_max: None,
                        proto_min: None,
                        proto_max: None,
                        flags: 0,
                    },
                ],
            ],
        ),
        Rule::new(
            "post",
            vec![Expr::Masquerade {
                flags: nat_flags::PROTO_RANDOM | nat_flags::PERSISTENT,
                proto_min: None,
                proto_max: None,
            }],
        ),
        rule(
            "pre",
            &[
                matches::dport(value::IPPROTO_TCP, 8080),
                vec![
                    Expr::immediate(Reg::R1, value::ipv4(Ipv4Addr::new(10, 0, 0, 2))),
                    Expr::immediate(Reg::R2, value::port(80)),
                    Expr::Nat {
                        kind: NatKind::Dnat,
                        family: Family::Ip,
                        addr_min: Some(Reg::R1),
                        addr_max: None,
                        proto_min: Some(Reg::R2),
                        proto_max: None,
                        flags: nat_flags::PROTO_SPECIFIED,
                    },
                ],
            ],
        ),
        rule(
            f,
            &[
                matches::dport(value::IPPROTO_TCP, 23),
                vec![Expr::Reject(Reject::TcpReset)],
            ],
        ),
        rule(
            f,
            &[
                matches::dport(value::IPPROTO_UDP, 24),
                vec![Expr::Reject(Reject::IcmpxUnreach(1))],
            ],
        ),
        rule(
            f,
            &[
                matches::nfproto(value::NFPROTO_IPV4),
                vec![
                    Expr::ip_protocol(Reg::R1),
                    Expr::cmp(CmpOp::Eq, Reg::R1, value::byte(value::IPPROTO_UDP)),
                    Expr::Reject(Reject::IcmpUnreach(1)),
                ],
            ],
        ),
        Rule::new(
            f,
            vec![Expr::Log {
                prefix: Some("nmmw: ".into()),
                group: None,
                level: Some(6),
            }],
        ),
        Rule::new(
            f,
            vec![Expr::Log {
                prefix: None,
                group: Some(2),
                level: None,
            }],
        ),
        rule(
            f,
            &[
                vec![
                    Expr::ct(CtKey::Direction, Reg::R1),
                    Expr::cmp(CmpOp::Eq, Reg::R1, value::byte(value::CT_DIR_ORIGINAL)),
                ],
                matches::skgid(100),
                accept(),
            ],
        ),
        rule(
            f,
            &[
                matches::nfproto(value::NFPROTO_IPV6),
                matches::l4proto(value::IPPROTO_ICMPV6),
                vec![
                    Expr::icmpv6_type(Reg::R1),
                    Expr::cmp(CmpOp::Eq, Reg::R1, value::byte(value::ICMPV6_ECHO_REQUEST)),
                ],
                accept(),
            ],
        ),
        rule(
            f,
            &[
                matches::ct_state(value::CT_STATE_ESTABLISHED | value::CT_STATE_RELATED, true),
                accept(),
            ],
        ),
        rule(
            f,
            &[
                vec![
                    Expr::Socket {
                        key: SocketKey::Transparent,
                        dreg: Reg::R1,
                    },
                    Expr::cmp(CmpOp::Eq, Reg::R1, value::byte(1)),
                    Expr::Socket {
                        key: SocketKey::Mark,
                        dreg: Reg::R1,
                    },
                    Expr::cmp(CmpOp::Eq, Reg::R1, value::u32_host(1)),
                ],
                accept(),
            ],
        ),
        rule(
            f,
            &[vec![
                Expr::Fib {
                    flags: FibFlags::SADDR | FibFlags::IIF | FibFlags::PRESENT,
                    result: FibResult::Oif,
                    dreg: Reg::R1,
                },
                Expr::cmp(CmpOp::Eq, Reg::R1, value::u32_host(0)),
                Expr::verdict(Verdict::Drop),
            ]],
        ),
        rule(
            f,
            &[
                vec![
                    Expr::Fib {
                        flags: FibFlags::DADDR,
                        result: FibResult::Oif,
                        dreg: Reg::R1,
                    },
                    Expr::cmp(CmpOp::Eq, Reg::R1, value::u32_host(1)), // lo
                ],
                accept(),
            ],
        ),
        Rule::new(
            f,
            vec![
                Expr::Numgen {
                    mode: NumgenMode::Random,
                    modulus: 4,
                    offset: 1,
                    dreg: Reg::R1,
                },
                Expr::meta_set(MetaKey::Mark, Reg::R1),
            ],
        ),
        rule(
            f,
            &[
                vec![
                    Expr::meta(MetaKey::Iifname, Reg::R1),
                    Expr::cmp(CmpOp::Eq, Reg::R1, value::ifname_prefix("eth")),
                ],
                accept(),
            ],
        ),
        rule(
            f,
            &[
                vec![
                    Expr::th_dport(Reg::R1),
                    Expr::cmp(CmpOp::Eq, Reg::R1, value::port(53)),
                ],
                accept(),
            ],
        ),
        rule(
            f,
            &[
                matches::nfproto(value::NFPROTO_IPV4),
                vec![
                    Expr::payload(PayloadBase::Network, 16, 2, Reg::R1),
                    Expr::cmp(CmpOp::Neq, Reg::R1, vec![10, 1]),
                ],
                accept(),
            ],
        ),
        rule(
            f,
            &[
                matches::nfproto(value::NFPROTO_IPV4),
                matches::l4proto(value::IPPROTO_TCP),
                vec![
                    Expr::ip_saddr(Reg::R1),
                    Expr::th_dport(Reg::at_byte(4)),
                    Expr::lookup("ports", Reg::R1),
                ],
                accept(),
            ],
        ),
        rule(f, &[matches::ip6_saddr(Ipv6Addr::LOCALHOST), accept()]),
        rule(
            f,
            &[
                matches::l4proto(value::IPPROTO_TCP),
                vec![
                    Expr::th_sport(Reg::R1),
                    Expr::cmp(CmpOp::Lt, Reg::R1, value::port(1024)),
                ],
                accept(),
            ],
        ),
        rule(
            f,
            &[
                matches::l4proto(value::IPPROTO_TCP),
                vec![
                    Expr::Ct {
                        key: CtKey::ProtoDst,
                        direction: Some(CtDirection::Original),
                        dreg: Reg::R1,
                    },
                    Expr::cmp(CmpOp::Eq, Reg::R1, value::port(22)),
                    Expr::verdict(Verdict::Jump("sub".into())),
                ],
            ],
        ),
        Rule::new("sub", vec![Expr::verdict(Verdict::Continue)]),
    ];
    let ports = Set::new(
        "ports",
        KeyType::concat(vec![DataType::Ipv4Addr, DataType::InetService]),
    )
    .interval()
    .with_elements(vec![
        Element::range(
            value::concat(&[&[10, 0, 0, 0], &value::port(80)]),
            value::concat(&[&[10, 255, 255, 255], &value::port(90)]),
        ),
        Element::concat(&[&[192, 168, 1, 1], &value::port(443)]),
    ]);
    TableContents {
        table: Table::new(Family::Inet, name),
        chains: vec![
            Chain::base(
                "post",
                ChainKind::Nat,
                Hook::Postrouting,
                priority::SRCNAT,
                Policy::Accept,
            ),
            Chain::base(
                "pre",
                ChainKind::Nat,
                Hook::Prerouting,
                priority::DSTNAT,
                Policy::Accept,
            ),
            Chain::base(
                "f",
                ChainKind::Filter,
                Hook::Input,
                priority::FILTER,
                Policy::Drop,
            ),
            Chain::regular("sub"),
        ],
        sets: vec![ports],
        rules,
    }
}

#[test]
fn other_expressions_list_as_nft_loads_them() {
    in_netns("other_expressions_list_as_nft_loads_them", || {
        assert_same_as_nft(Family::Inet, EXTRA, &extra("extra"));
        let listed = nft_list("inet", "extra");
        for needle in [
            "snat ip6 to 2001:db8::1",
            "dnat ip to 10.0.0.2:80",
            "reject with tcp reset",
            "log prefix \"nmmw: \" level info",
            "fib saddr . iif oif missing drop",
            "ip saddr . tcp dport @ports accept",
            "10.0.0.0/8 . 80-90",
            "tcp ct original proto-dst 22 jump sub",
        ] {
            assert!(listed.contains(needle), "{needle:?} missing in:\n{listed}");
        }
    });
}

/// The kernel stores what we sent: rules read back decode to the same expressions
/// (anonymous sets by the name the kernel gave them).
#[test]
fn rules_read_back_as_written() {
    in_netns("rules_read_back_as_written", || {
        let contents = representative("nm-multiwan", "plan=abc", cgroup_dir());
        let mut nft = Nft::new().unwrap();
        let mut batch = Batch::new();
        batch.replace_table(&contents).unwrap();
        nft.commit(&batch).unwrap();
        let back = nft.list_rules(Family::Inet, "nm-multiwan").unwrap();
        assert_eq!(back.len(), contents.rules.len());
        let mut anonymous = Vec::new();
        for (sent, got) in contents.rules.iter().zip(&back) {
            assert_eq!(got.chain, sent.chain);
            assert_eq!(got.exprs.len(), sent.exprs.len(), "{got:?}");
            for (s, g) in sent.exprs.iter().zip(&got.exprs) {
                match (s, g) {
                    (
                        Expr::Lookup {
                            set: SetRef::Anonymous(_),
                            sreg,
                            ..
                        },
                        Expr::Lookup {
                            set: SetRef::Named(name),
                            sreg: got_sreg,
                            ..
                        },
                    ) => {
                        assert!(name.starts_with("__set"), "{name}");
                        assert_eq!(sreg, got_sreg);
                        anonymous.push(name.clone());
                    }
                    _ => assert_eq!(g, s, "in chain {}", sent.chain),
                }
            }
        }
        assert_eq!(anonymous.len(), 2);
        // Anonymous sets read back with their elements, the interval one as ranges.
        let ports = nft
            .list_set_elements(Family::Inet, "nm-multiwan", &anonymous[1])
            .unwrap();
        assert_eq!(
            ports.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
            vec![
                Key::Value(value::port(443)),
                Key::range(value::port(8000), value::port(8100)),
            ]
        );
        let handles: std::collections::BTreeSet<u64> = back.iter().map(|r| r.handle).collect();
        assert_eq!(handles.len(), back.len(), "handles are distinct");
    });
}

fn traffic_table(comment: &str, extra_chain: Option<&str>) -> TableContents {
    let mut chains = vec![Chain::base(
        "output",
        ChainKind::Route,
        Hook::Output,
        priority::MANGLE,
        Policy::Accept,
    )];
    let mut sets = Vec::new();
    if let Some(name) = extra_chain {
        chains.push(Chain::regular(name));
        sets.push(
            Set::new(name, KeyType::single(DataType::Mark))
                .with_elements(vec![Element::u32_host(7)]),
        );
    }
    TableContents {
        table: Table::new(Family::Inet, "nm-multiwan").with_comment(comment),
        chains,
        sets,
        rules: vec![
            Rule::new(
                "output",
                [
                    matches::nfproto(value::NFPROTO_IPV4),
                    matches::l4proto(value::IPPROTO_UDP),
                    vec![Expr::counter()],
                ]
                .concat(),
            )
            .with_comment("udp out"),
        ],
    }
}

fn send_udp(to: Ipv4Addr, count: usize) {
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    for _ in 0..count {
        // Nobody listens: the datagram still leaves through the output hook.
        let _ = sock.send_to(b"x", (to, 9));
    }
}

#[test]
fn replacing_under_traffic_swaps_the_whole_table() {
    in_netns("replacing_under_traffic_swaps_the_whole_table", || {
        let mut nft = Nft::new().unwrap();
        let mut batch = Batch::new();
        batch
            .replace_table(&traffic_table("plan=old", Some("old_stuff")))
            .unwrap();
        nft.commit(&batch).unwrap();
        assert!(nft_list("inet", "nm-multiwan").contains("old_stuff"));

        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut sent = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    send_udp(Ipv4Addr::LOCALHOST, 10);
                    sent += 10;
                }
                sent
            })
        };
        for i in 0..30 {
            let mut batch = Batch::new();
            batch
                .replace_table(&traffic_table(&format!("plan={i}"), None))
                .unwrap();
            nft.commit(&batch).unwrap();
            let table = nft.get_table(Family::Inet, "nm-multiwan").unwrap().unwrap();
            assert_eq!(table.comment.as_deref(), Some(format!("plan={i}").as_str()));
        }
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        let sent = sender.join().unwrap();
        assert!(sent > 0);

        let listed = nft_list("inet", "nm-multiwan");
        assert!(
            !listed.contains("old_stuff"),
            "old objects remain:\n{listed}"
        );
        let chains = nft.list_chains(Family::Inet, "nm-multiwan").unwrap();
        assert_eq!(
            chains
                .iter()
                .map(|c| c.chain.name.as_str())
                .collect::<Vec<_>>(),
            vec!["output"]
        );
        assert!(
            nft.list_sets(Family::Inet, "nm-multiwan")
                .unwrap()
                .is_empty()
        );
        // The last table counted traffic.
        let rules = nft.list_rules(Family::Inet, "nm-multiwan").unwrap();
        assert_eq!(rules.len(), 1);
        let counter = rules[0].counter().expect("a counter");
        assert!(counter.packets > 0, "{counter:?}");
    });
}

#[test]
fn a_refused_rule_is_named_and_the_previous_table_stays() {
    in_netns(
        "a_refused_rule_is_named_and_the_previous_table_stays",
        || {
            let mut nft = Nft::new().unwrap();
            let good = representative("nm-multiwan", "plan=good", cgroup_dir());
            let mut batch = Batch::new();
            batch.replace_table(&good).unwrap();
            nft.commit(&batch).unwrap();
            let before = nft_list("inet", "nm-multiwan");

            let mut bad = representative("nm-multiwan", "plan=bad", cgroup_dir());
            // Rule 3 of chain output jumps to a chain that does not exist.
            let third_output = bad
                .rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.chain == "output")
                .nth(2)
                .unwrap()
                .0;
            bad.rules[third_output] = Rule::new("output", goto("missing"));
            let mut batch = Batch::new();
            batch.replace_table(&bad).unwrap();
            let err = nft.commit(&batch).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("adding rule 3 to chain output"),
                "error does not name the rule: {text}"
            );
            assert!(text.contains("ENOENT"), "{text}");
            assert!(
                matches!(
                    err,
                    Error::Refused {
                        rolled_back: true,
                        ..
                    }
                ),
                "{err:?}"
            );
            assert_eq!(err.errno(), Some(libc::ENOENT));

            assert_eq!(nft_list("inet", "nm-multiwan"), before);
            let table = nft.get_table(Family::Inet, "nm-multiwan").unwrap().unwrap();
            assert_eq!(table.comment.as_deref(), Some("plan=good"));
            // The handle still works after a refusal.
            assert!(nft.generation().is_ok());
        },
    );
}

#[test]
fn userdata_round_trips() {
    in_netns("userdata_round_trips", || {
        let mut nft = Nft::new().unwrap();
        assert_eq!(nft.get_table(Family::Inet, "nm-multiwan").unwrap(), None);
        let mut batch = Batch::new();
        batch
            .replace_table(&traffic_table("plan=5f3a", None))
            .unwrap();
        nft.commit(&batch).unwrap();
        let table = nft.get_table(Family::Inet, "nm-multiwan").unwrap().unwrap();
        assert_eq!(table.comment.as_deref(), Some("plan=5f3a"));
        assert_eq!(table.family, Family::Inet);
        assert_eq!(table.name, "nm-multiwan");
        assert!(table.handle > 0);
        assert_eq!(table.use_count, 1); // one chain, no set
        let rules = nft.list_rules(Family::Inet, "nm-multiwan").unwrap();
        assert_eq!(rules[0].comment.as_deref(), Some("udp out"));
        // nft sees the same comments.
        let listed = nft_list("inet", "nm-multiwan");
        assert!(listed.contains("comment \"plan=5f3a\""), "{listed}");
        assert!(listed.contains("comment \"udp out\""), "{listed}");
        // And reads nft's: a table nft made.
        nft_f("table ip theirs { comment \"made by nft\"; }");
        let theirs = nft.get_table(Family::Ip, "theirs").unwrap().unwrap();
        assert_eq!(theirs.comment.as_deref(), Some("made by nft"));
    });
}

#[test]
fn counters_count_traffic() {
    in_netns("counters_count_traffic", || {
        let mut nft = Nft::new().unwrap();
        let mut batch = Batch::new();
        batch.replace_table(&traffic_table("plan=c", None)).unwrap();
        nft.commit(&batch).unwrap();
        let before = nft.list_rules(Family::Inet, "nm-multiwan").unwrap()[0]
            .counter()
            .unwrap();
        assert_eq!(before.packets, 0);
        send_udp(Ipv4Addr::LOCALHOST, 25);
        let after = nft.list_rules(Family::Inet, "nm-multiwan").unwrap()[0]
            .counter()
            .unwrap();
        assert_eq!(after.packets, 25, "{after:?}");
        assert!(after.bytes >= 25 * 29, "{after:?}"); // 20 IP + 8 UDP + 1
        let listed = nft_list("inet", "nm-multiwan");
        assert!(
            listed.contains(&format!("counter packets 25 bytes {}", after.bytes)),
            "{listed}"
        );
    });
}

#[test]
fn set_elements_read_back_with_expiration() {
    in_netns("set_elements_read_back_with_expiration", || {
        let sticky = Set::map(
            "sticky_1",
            KeyType::single(DataType::Ipv4Addr),
            SetData::Value(DataType::Mark),
        )
        .dynamic()
        .with_timeout(Duration::from_secs(600));
        let exclude4 = Set::new("exclude4", KeyType::single(DataType::Ipv4Addr))
            .interval()
            .with_elements(vec![
                Element::ipv4_prefix(Ipv4Addr::new(10, 0, 1, 0), 24),
                Element::ipv4_prefix(Ipv4Addr::new(10, 0, 0, 0), 8), // covers the first
                Element::ipv4(Ipv4Addr::new(192, 0, 2, 1)),
            ]);
        let exclude6 = Set::new("exclude6", KeyType::single(DataType::Ipv6Addr))
            .interval()
            .with_elements(vec![Element::ipv6_prefix("ff00::".parse().unwrap(), 8)]);
        let contents = TableContents {
            table: Table::new(Family::Inet, "nm-multiwan"),
            chains: vec![Chain::base(
                "output",
                ChainKind::Route,
                Hook::Output,
                priority::MANGLE,
                Policy::Accept,
            )],
            sets: vec![sticky.clone(), exclude4, exclude6],
            rules: vec![rule(
                "output",
                &[
                    vec![
                        Expr::immediate(Reg::R1, value::u32_host(mark(1))),
                        Expr::meta_set(MetaKey::Mark, Reg::R1),
                    ],
                    matches::nfproto(value::NFPROTO_IPV4),
                    // UDP only: not the ICMP errors the datagrams cause.
                    matches::l4proto(value::IPPROTO_UDP),
                    vec![
                        Expr::ip_daddr(Reg::R1),
                        Expr::meta(MetaKey::Mark, Reg::R2),
                        Expr::Dynset {
                            op: DynsetOp::Update,
                            set: "sticky_1".into(),
                            sreg_key: Reg::R1,
                            sreg_data: Some(Reg::R2),
                            timeout: None,
                        },
                    ],
                ],
            )],
        };
        let mut nft = Nft::new().unwrap();
        let mut batch = Batch::new();
        batch.replace_table(&contents).unwrap();
        // One element added by us with its own timeout.
        batch
            .add_elements(
                Family::Inet,
                "nm-multiwan",
                &sticky,
                &[Element::ipv4(Ipv4Addr::new(198, 51, 100, 7))
                    .data(value::u32_host(mark(2)))
                    .timeout(Duration::from_secs(60))],
            )
            .unwrap();
        nft.commit(&batch).unwrap();
        // One added by the kernel, from traffic.
        send_udp(Ipv4Addr::new(127, 0, 0, 2), 1);

        let mut elements = nft
            .list_set_elements(Family::Inet, "nm-multiwan", "sticky_1")
            .unwrap();
        elements.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(elements.len(), 2, "{elements:?}");
        let from_traffic = &elements[0];
        assert_eq!(from_traffic.key, Key::Value(vec![127, 0, 0, 2]));
        assert_eq!(
            from_traffic.data,
            Some(nft::ElemData::Value(value::u32_host(mark(1))))
        );
        let left = from_traffic.expiration.expect("an expiration");
        assert!(
            left <= Duration::from_secs(600) && left > Duration::from_secs(590),
            "{left:?}"
        );
        let ours = &elements[1];
        assert_eq!(ours.key, Key::Value(vec![198, 51, 100, 7]));
        let left = ours.expiration.expect("an expiration");
        assert!(
            left <= Duration::from_secs(60) && left > Duration::from_secs(50),
            "{left:?}"
        );
        let listed = nft_list("inet", "nm-multiwan");
        assert!(listed.contains("127.0.0.2 expires"), "{listed}");

        // Interval sets read back merged, as prefixes.
        let ex4 = nft
            .list_set_elements(Family::Inet, "nm-multiwan", "exclude4")
            .unwrap();
        let keys: Vec<(Vec<u8>, Option<u32>)> = ex4
            .iter()
            .map(|e| (e.key.start().to_vec(), e.key.prefix_len()))
            .collect();
        assert_eq!(
            keys,
            vec![(vec![10, 0, 0, 0], Some(8)), (vec![192, 0, 2, 1], Some(32))]
        );
        let ex6 = nft
            .list_set_elements(Family::Inet, "nm-multiwan", "exclude6")
            .unwrap();
        assert_eq!(ex6.len(), 1);
        assert_eq!(ex6[0].key.prefix_len(), Some(8));
        assert!(listed.contains("10.0.0.0/8, 192.0.2.1"), "{listed}");

        // Deleting and flushing elements.
        let mut batch = Batch::new();
        batch
            .delete_elements(
                Family::Inet,
                "nm-multiwan",
                &Set::new("exclude4", KeyType::single(DataType::Ipv4Addr)).interval(),
                &[Element::ipv4(Ipv4Addr::new(192, 0, 2, 1))],
            )
            .unwrap();
        batch.flush_set(Family::Inet, "nm-multiwan", "sticky_1");
        nft.commit(&batch).unwrap();
        let ex4 = nft
            .list_set_elements(Family::Inet, "nm-multiwan", "exclude4")
            .unwrap();
        assert_eq!(ex4.len(), 1);
        assert!(
            nft.list_set_elements(Family::Inet, "nm-multiwan", "sticky_1")
                .unwrap()
                .is_empty()
        );
        // A missing set is an ENOENT error.
        let err = nft
            .list_set_elements(Family::Inet, "nm-multiwan", "nope")
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
    });
}

#[test]
fn nf_tables_is_available() {
    in_netns("nf_tables_is_available", || {
        assert!(nft::available());
        let mut nft = Nft::new().unwrap();
        let g1 = nft.generation().unwrap();
        let mut batch = Batch::new();
        batch.add_table(&Table::new(Family::Ip, "gen")).unwrap();
        nft.commit(&batch).unwrap();
        assert_ne!(
            nft.generation().unwrap(),
            g1,
            "a commit makes a new generation"
        );
    });
}

const FOREIGN: &str = r#"
table inet firewalld {
  set allowed { type ipv4_addr; elements = { 192.0.2.9 } }
  chain filter_INPUT {
    type filter hook input priority filter + 10; policy accept;
    ct state established,related accept
    ip saddr @allowed accept comment "theirs"
  }
}
"#;

/// Everything about the other programs' tables, handles included.
fn foreign_state() -> String {
    [
        run("nft", &["-a", "list", "table", "inet", "firewalld"], None),
        run("nft", &["-a", "list", "table", "ip", "nat"], None),
        run("iptables-nft-save", &["-t", "nat"], None)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
    ]
    .join("\n")
}

#[test]
fn other_tables_are_never_touched() {
    in_netns("other_tables_are_never_touched", || {
        nft_f(FOREIGN);
        run(
            "iptables-nft",
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "eth0",
                "-j",
                "MASQUERADE",
            ],
            None,
        );
        let before = foreign_state();
        assert!(before.contains("MASQUERADE"), "{before}");

        let mut nft = Nft::new().unwrap();
        let id = cgroup_dir();
        for comment in ["plan=1", "plan=2"] {
            let mut batch = Batch::new();
            batch
                .replace_table(&representative("nm-multiwan", comment, id))
                .unwrap();
            nft.commit(&batch).unwrap();
        }
        let mut tables = nft.list_tables().unwrap();
        tables.sort();
        assert_eq!(
            tables,
            vec![
                (Family::Inet, "firewalld".to_string()),
                (Family::Inet, "nm-multiwan".to_string()),
                (Family::Ip, "nat".to_string()),
            ]
        );
        for _ in 0..2 {
            // The second time the table is gone: still no error.
            let mut batch = Batch::new();
            batch.delete_table_if_exists(Family::Inet, "nm-multiwan");
            nft.commit(&batch).unwrap();
        }
        assert_eq!(nft.get_table(Family::Inet, "nm-multiwan").unwrap(), None);
        assert_eq!(foreign_state(), before);
    });
}

#[test]
fn transactions_edit_chains_and_sets_in_place() {
    in_netns("transactions_edit_chains_and_sets_in_place", || {
        let mut nft = Nft::new().unwrap();
        let mut batch = Batch::new();
        batch
            .replace_table(&traffic_table("plan=x", Some("extra")))
            .unwrap();
        nft.commit(&batch).unwrap();

        let mut batch = Batch::new();
        batch
            .flush_chain(Family::Inet, "nm-multiwan", "output")
            .delete_chain(Family::Inet, "nm-multiwan", "extra")
            .delete_set(Family::Inet, "nm-multiwan", "extra")
            .add_chain(Family::Inet, "nm-multiwan", &Chain::regular("added"));
        batch
            .add_rule(
                Family::Inet,
                "nm-multiwan",
                &Rule::new("output", vec![Expr::verdict(Verdict::Jump("added".into()))]),
            )
            .unwrap();
        nft.commit(&batch).unwrap();
        let listed = nft_list("inet", "nm-multiwan");
        assert!(listed.contains("jump added"), "{listed}");
        assert!(!listed.contains("udp"), "{listed}");
        assert!(!listed.contains("extra"), "{listed}");

        let mut batch = Batch::new();
        batch.flush_table(Family::Inet, "nm-multiwan");
        nft.commit(&batch).unwrap();
        assert!(
            nft.list_rules(Family::Inet, "nm-multiwan")
                .unwrap()
                .is_empty()
        );
        let mut batch = Batch::new();
        batch.delete_table(Family::Inet, "nm-multiwan");
        nft.commit(&batch).unwrap();
        // Deleting a missing table is refused and says so.
        let err = nft.commit(&batch).unwrap_err();
        assert!(
            err.to_string().contains("deleting table inet nm-multiwan"),
            "{err}"
        );
    });
}
