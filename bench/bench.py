#!/usr/bin/env python3
"""nm-multiwan benchmarks: driven by bench/run (which builds the release binary and
cleans up on Ctrl-C). Every scenario runs in sandboxes (tests/sandbox/sandbox.sh: a real
NetworkManager in network namespaces, uplinks shaped with tc) and compares against its
baseline in the same run, interleaved, so that ratios hold on a noisy machine.

Writes target/bench/results.json (every raw repetition), target/bench/apply_time.svg,
target/bench/goodput.svg and prints one table. Stdlib only.
"""
import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SANDBOX = REPO / "tests/sandbox/sandbox.sh"
AGENT = REPO / "bench/agent.py"
DISPATCHER = REPO / "dispatcher.d/90-nm-multiwan"
DBUS_POLICY = REPO / "dbus/net.nmmultiwan.Daemon1.conf"
PY = sys.executable
SERVER = "198.51.100.10"
SB_ROOT = Path(os.environ.get("SB_ROOT", "/tmp/nm-multiwan-sandbox"))

GOODPUT_GOAL = 0.97
# The goals of the nftables issue, checked for both backends side by side.
NOOP_GOAL_MS = 3.0  # median no-op reconcile at 16 uplinks
NOOP_GOAL_AT = 16
APPLY_VS_RECIPE_GOAL = 0.15  # from nothing, against the recipe's script, at 8 uplinks
DATAPLANE_GOAL = 0.98  # single unshaped stream, against no ruleset at all
RSS_GOAL_MB = 10.0
STRIPPED_GOAL_MB = 6.0
CPU_REST_GOAL_PCT = 0.5  # of one core: "no measurable CPU at rest beyond probes"
REACT_GOAL_MS = 1000.0  # our reading of "react at once"
FAILOVER_GOAL_MS = 2000.0  # issue 11: failover within 2 s at the defaults
RESUME_GOAL_S = 1.0  # issue 11: a retrying client resumes within 1 s of the verdict


# Every scenario that involves the firewall runs once per backend (the config's
# `firewall` key), interleaved with the other in the same sandbox.
BACKENDS = ("nftables", "iptables")


def fw_config(backend, extra=None):
    """The config file for `backend` (the key must precede any table)."""
    return f'firewall = "{backend}"\n' + (extra or "")


def isp_addr(k):
    return f"203.0.113.{4 * k + 2}"


CAMPUS_ADDR = "203.0.113.38"
KEEPER_DEVICE = "nmmw0"  # where nm-multiwan keeps departed and primary addresses


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- statistics -------------------------------------------------------------------------


def stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def fmt(st, unit="", digits=1):
    if st is None:
        return "—"
    f = f"{{:.{digits}f}}"
    return f"{f.format(st['median'])}{unit} [{f.format(st['min'])}–{f.format(st['max'])}]"


def rotated_rounds(variants, reps, measure):
    """`reps` rounds over `variants` (name -> (setup, teardown), either may be None),
    each round starting one variant later, so that no variant always runs first or
    right after the same other: each variant set up, measured, torn down. Returns
    (name -> measurements, the order of each round)."""
    names = list(variants)
    runs = {name: [] for name in names}
    order = []
    for rep in range(reps):
        k = rep % len(names)
        rot = names[k:] + names[:k]
        order.append(rot)
        for name in rot:
            setup, teardown = variants[name]
            if setup:
                setup()
            runs[name].append(measure())
            if teardown:
                teardown()
    return runs, order


def times(r):
    return "—" if r is None else f"{r:.2f} ×"


def counted(c, key):
    """How many calls a daemon row left out (see scenario_apply), when any."""
    n = c.get(key + "_left_out", 0)
    return f" ({n} call{'s' if n != 1 else ''} left out)" if n else ""


def ratio(a, b):
    if a is None or b is None or not b["median"]:
        return None
    return a["median"] / b["median"]


# --- sandboxes --------------------------------------------------------------------------


class Sandbox:
    """A sandbox named bn<pid><tag>, registered before creation in REGISTRY so that
    bench/run's trap destroys it whatever happens."""

    registry = None

    def __init__(self, tag, specs, binary, rate=None, dispatcher=False, config=None, loose_rp=False,
                 daemon=False, rate_per_address=None):
        self.name = f"bn{os.getpid()}{tag}"
        assert len(self.name) <= 16 and re.fullmatch(r"[A-Za-z0-9_]+", self.name), self.name
        self.specs = specs
        self.ifaces = [s.split(":")[0] for s in specs]
        self.work = SB_ROOT / self.name
        self.created = False
        if Sandbox.registry:
            with open(Sandbox.registry, "a") as f:
                f.write(self.name + "\n")
        env = dict(os.environ, SB_QUIET="1", SB_BINARY=str(binary))
        if rate:
            env["SB_RATE"] = rate
        if rate_per_address:
            env["SB_RATE_PER_ADDRESS"] = rate_per_address
        if dispatcher:
            env["SB_DISPATCHER"] = str(DISPATCHER)
        if daemon and DBUS_POLICY.exists():
            # As installed by the packages: the daemon may own its bus name.
            env["SB_DBUS_POLICY"] = str(DBUS_POLICY)
        if loose_rp:
            # As on a real machine: NetworkManager loosens rp_filter to 2 on its uplinks
            # (without it the recipe loses every connection not on the main uplink).
            env["SB_NM_LOOSENS_RP_FILTER"] = "1"
        cfg = None
        if config:
            cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
            cfg.write(config)
            cfg.close()
            env["SB_CONFIG"] = cfg.name
        t = time.perf_counter()
        r = subprocess.run([str(SANDBOX), "create", self.name, *specs], env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if cfg:
            os.unlink(cfg.name)
        if r.returncode != 0:
            raise RuntimeError(f"sandbox create {self.name} failed:\n{r.stderr[-2000:]}")
        self.created = True
        log(f"sandbox {self.name} ({' '.join(specs)}) ready in {time.perf_counter() - t:.1f} s")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()

    def destroy(self):
        subprocess.run([str(SANDBOX), "destroy", self.name], env=dict(os.environ, SB_QUIET="1"),
                       stdin=subprocess.DEVNULL, capture_output=True)
        self.created = False

    def run(self, *cmd, check=True, timeout=300):
        r = subprocess.run([str(SANDBOX), "exec", self.name, *cmd], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
        return r.stdout

    def ns(self, nsname, *cmd, check=True):
        r = subprocess.run(["ip", "netns", "exec", f"{self.name}-{nsname}", *cmd],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"{self.name}-{nsname}: {' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
        return r.stdout

    def sh(self, script, check=True):
        return self.run("sh", "-c", script, check=check)

    def agent(self, *args, timeout=300):
        out = self.run(PY, str(AGENT), *[str(a) for a in args], timeout=timeout)
        return json.loads(out.strip().splitlines()[-1])

    def up(self, conn, timeout=60):
        r = subprocess.run([str(SANDBOX), "wait-up", self.name, conn, str(timeout)],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"wait-up {conn}: {r.stderr[-1500:]}")

    def up_all(self):
        for i in self.ifaces:
            self.up(f"up-{i}")

    def nmmw(self, *args, check=True):
        return self.run("/usr/bin/nm-multiwan", "-q", *args, check=check)

    def gateways(self):
        """iface -> (gateway, subnet) from the main table (NetworkManager's routes)."""
        out = {}
        routes = self.run("ip", "-4", "route", "show", "table", "main")
        for line in routes.splitlines():
            w = line.split()
            if w[0] == "default" and "via" in w and "dev" in w:
                dev = w[w.index("dev") + 1]
                out.setdefault(dev, [None, None])[0] = w[w.index("via") + 1]
        for line in routes.splitlines():
            w = line.split()
            if "proto" in w and w[w.index("proto") + 1] == "kernel" and "dev" in w:
                dev = w[w.index("dev") + 1]
                if dev in out:
                    out[dev][1] = w[0]
        return {k: tuple(v) for k, v in out.items()}

    def write_config(self, text):
        p = self.work / "etc-nm-multiwan/config.toml"
        if text is None:
            p.unlink(missing_ok=True)
        else:
            p.write_text(text)

    def use(self, backend, extra=None):
        """Writes the config for `backend` (plus `extra` keys); the next run uses it."""
        self.write_config(fw_config(backend, extra))

    def check_backend(self, backend):
        """The backend in use (`status --json`) is the one the config asks for: else every
        figure of this backend would be the other's."""
        st = json.loads(self.run("/usr/bin/nm-multiwan", "status", "--json"))
        if st.get("firewall") != backend:
            raise RuntimeError(f"{self.name}: config asks for {backend}, status says {st.get('firewall')!r}")
        return st

    def addresses(self):
        """IPv4 address -> interface in the host. nm-multiwan keeps a copy of the primary
        uplink's address on its own device nmmw0 (so that it can outlive the uplink): the
        uplink's own interface wins."""
        out = {}
        for line in self.run("ip", "-4", "-o", "addr", "show").splitlines():
            w = line.split()
            addr = w[3].split("/")[0]
            if w[1] != KEEPER_DEVICE or addr not in out:
                out[addr] = w[1]
        return out

    def spread(self, n, weights):
        """n new connections to the server's echo port, one after another: how many each
        uplink carried, as conntrack saw them (the reply's destination is the address the
        connection left with; the peer's view cannot tell apart two uplinks behind one
        NAT, as on the campus). Exact when each uplink got n / round × its weight."""
        self.run("conntrack", "-D", "-p", "tcp", "--orig-port-dst", "7000", check=False)
        out = self.run(PY, str(REPO / "tests/sandbox/client.py"), "which", str(n))
        seen = {}
        for line in out.splitlines():
            key = "FAIL" if line.startswith("FAIL") else line.strip()
            seen[key] = seen.get(key, 0) + 1
        ct = self.run("conntrack", "-L", "-p", "tcp", "--orig-port-dst", "7000", check=False)
        addrs = self.addresses()
        tally = {}
        for line in ct.splitlines():
            dsts = re.findall(r"\bdst=(\S+)", line)
            if len(dsts) >= 2:
                iface = addrs.get(dsts[1], dsts[1])
                tally[iface] = tally.get(iface, 0) + 1
        rnd = sum(weights.values())
        expected = {i: n // rnd * w for i, w in weights.items()}
        return {"n": n, "round": rnd, "tally": tally, "server_saw": seen, "expected": expected,
                "exact": tally == expected and "FAIL" not in seen}

    def pids(self, nsname):
        out = subprocess.run(["ip", "netns", "pids", f"{self.name}-{nsname}"], capture_output=True,
                             text=True).stdout.split()
        return [int(p) for p in out]


# --- the alternatives -------------------------------------------------------------------


def multipath_on(sb, ifaces, weights=None):
    """The kernel's own answer: one multipath default route (above NetworkManager's, metric
    10) spreading by an L4 hash. No MASQUERADE: the kernel picks the source address of the
    nexthop it chose (checked by multipath_source_check)."""
    gws = sb.gateways()
    hops = []
    for i, iface in enumerate(ifaces):
        w = weights[i] if weights else 1
        hops += ["nexthop", "via", gws[iface][0], "dev", iface, "weight", str(w)]
    sb.sh("sysctl -qw net.ipv4.fib_multipath_hash_policy=1 && "
          "ip route replace default metric 10 " + " ".join(hops))


def multipath_off(sb):
    sb.sh("ip route del default metric 10 2>/dev/null; sysctl -qw net.ipv4.fib_multipath_hash_policy=0; true")


def multipath_source_check(sb, n):
    """Do connections over the multipath route work without MASQUERADE (source address
    of the right uplink)? Returns the replies' tally."""
    out = sb.run(PY, str(REPO / "tests/sandbox/client.py"), "which", str(n))
    tally = {}
    for line in out.splitlines():
        key = "FAIL" if line.startswith("FAIL") else line.strip()
        tally[key] = tally.get(key, 0) + 1
    return tally


def recipe_script(uplinks):
    """The hand-made recipe as a user would type it for these uplinks: literal commands, one
    process each (ip rule/route add, iptables -A), marks 10.., tables 110.., prio 31000."""
    lines = ["#!/bin/sh", "set -e"]
    for n, (dev, gw, net) in enumerate(uplinks):
        lines.append(f"ip rule add fwmark {10 + n} table {110 + n} prio 31000")
    for n, (dev, gw, net) in enumerate(uplinks):
        lines.append(f"ip route add {net} dev {dev} table {110 + n}")
        lines.append(f"ip route add default via {gw} table {110 + n}")
    k = len(uplinks)
    lines += [
        "iptables -t mangle -A OUTPUT -j CONNMARK --restore-mark",
        "iptables -t mangle -A OUTPUT -m mark ! --mark 0 -j ACCEPT",
        "iptables -t mangle -A OUTPUT -j MARK --set-mark 10",
    ]
    for i in range(1, k):
        lines.append(f"iptables -t mangle -A OUTPUT -m statistic --mode nth --every {k} --packet {i - 1} "
                     f"-j MARK --set-mark {10 + i}")
    lines.append("iptables -t mangle -A OUTPUT -j CONNMARK --save-mark")
    for dev, _, _ in uplinks:
        lines.append(f"iptables -t nat -A POSTROUTING -o {dev} -j MASQUERADE")
    return "\n".join(lines) + "\n"


RECIPE_CLEAN = """#!/bin/sh
while ip rule del prio 31000 2>/dev/null; do :; done
for t in $(seq 110 140); do ip route flush table $t 2>/dev/null; done
iptables -t mangle -F OUTPUT 2>/dev/null
iptables -t nat -F POSTROUTING 2>/dev/null
# From nothing, like nm-multiwan after its flush: the tables only we used go too.
nft delete table ip mangle 2>/dev/null
nft delete table ip nat 2>/dev/null
true
"""


def recipe_uplinks(sb, ifaces):
    gws = sb.gateways()
    return [(i, gws[i][0], gws[i][1]) for i in ifaces]


def install_recipe(sb, ifaces, tag="recipe"):
    d = sb.work / "bench"
    d.mkdir(exist_ok=True)
    (d / f"{tag}.sh").write_text(recipe_script(recipe_uplinks(sb, ifaces)))
    (d / "recipe-clean.sh").write_text(RECIPE_CLEAN)
    return str(d / f"{tag}.sh"), str(d / "recipe-clean.sh")


# --- scenario 1: goodput ----------------------------------------------------------------


def alone(sb, ifaces, reps, cfg):
    """Each uplink's goodput alone: the other connections down (nmcli), nm-multiwan
    flushed, 4 connections to saturate it."""
    sb.nmmw("flush")
    out = {}
    for iface in ifaces:
        others = [i for i in ifaces if i != iface]
        for o in others:
            sb.run("nmcli", "--wait", "30", "con", "down", f"up-{o}")
        out[iface] = [sb.agent("goodput", 4, cfg["warmup"], cfg["window"], *ifaces) for _ in range(reps)]
        for o in others:
            sb.up(f"up-{o}")
    return out


def goodput_case(sb, ifaces, plist, reps_of, cfg, schemes):
    """schemes: name -> (setup, teardown). Interleaved: for each P and repetition every
    scheme runs once, so drift on a busy machine hits all alike."""
    res = {name: {} for name in schemes}
    for p in plist:
        for _ in range(reps_of(p)):
            for name, (setup, teardown) in schemes.items():
                setup()
                r = sb.agent("goodput", p, cfg["warmup"], cfg["window"], *ifaces)
                teardown()
                res[name].setdefault(str(p), []).append(r)
    return res


def nth_scheme(sb, backend, extra=None):
    def setup():
        sb.use(backend, extra)
        sb.nmmw("apply")

    def teardown():
        sb.nmmw("flush")

    return setup, teardown


def mp_scheme(sb, ifaces, weights=None):
    return (lambda: multipath_on(sb, ifaces, weights)), (lambda: multipath_off(sb))


def scenario_goodput(binary, cfg, results):
    out = results.setdefault("goodput", {})
    cases = [("k2", ["eth0:static:1", "eth1:static:2"]),
             ("k3", ["eth0:static:1", "eth1:static:2", "eth2:static:3"]),
             ("campus", ["eth0:campus", "eth1:campus"])]
    for tag, specs in cases:
        if tag not in cfg["goodput_cases"]:
            continue
        try:
            goodput_one(binary, cfg, out, tag, specs)
        except Exception as e:  # the other cases still run
            out.setdefault("errors", {})[tag] = repr(e)
            log(f"goodput {tag} failed: {e}")
    if "unequal" in cfg["goodput_cases"]:
        scenario_unequal(binary, cfg, out)


def goodput_one(binary, cfg, out, tag, specs):
    k = len(specs)
    with Sandbox(tag, specs, binary, rate="10mbit") as sb:
        sb.up_all()
        ifaces = sb.ifaces
        log(f"goodput {tag}: each uplink alone")
        al = alone(sb, ifaces, cfg["alone_reps"], cfg)
        plist = sorted(set(cfg["plist"] + ([2 * k] if k == 3 and cfg["full"] else [])))

        def reps_of(p, k=k):
            return cfg["spread_reps"] if 2 <= p <= 2 * k else cfg["reps"]

        log(f"goodput {tag}: nth ({' and '.join(BACKENDS)}) vs multipath, P={plist}")
        schemes = {f"nth_{b}": nth_scheme(sb, b) for b in BACKENDS}
        schemes["multipath"] = mp_scheme(sb, ifaces)
        res = goodput_case(sb, ifaces, plist, reps_of, cfg, schemes)
        multipath_on(sb, ifaces)
        src = multipath_source_check(sb, 60)
        multipath_off(sb)
        out[tag] = {"k": k, "ifaces": ifaces, "alone": al, "runs": res, "multipath_without_masquerade": src}


def spread_checks(sb, cfg, weights, extra=None):
    """Per backend, interleaved: apply, then whole rounds of new connections; every round
    must be complete (each uplink exactly its weight's share)."""
    n = cfg["spread_rounds"] * sum(weights.values())
    out = {b: [] for b in BACKENDS}
    for _ in range(cfg["spread_check_reps"]):
        for b in BACKENDS:
            sb.use(b, extra)
            sb.nmmw("apply")
            sb.check_backend(b)
            out[b].append(sb.spread(n, weights))
    sb.nmmw("flush")
    return out


SPREAD_WEIGHTS = {"eth0": 1, "eth1": 3, "eth2": 2, "cmp0": 1, "cmp1": 1}


def scenario_spread(binary, cfg, results):
    """Whole nth rounds over five uplinks (three ISPs, two campus uplinks in one subnet
    behind one gateway), unshaped: equal weights, then weights 1:3:2:1:1; every round must
    be complete on both backends."""
    out = results.setdefault("spread", {})
    specs = ["eth0:static:1", "eth1:static:2", "eth2:static:3", "cmp0:campus", "cmp1:campus"]
    with Sandbox("spread", specs, binary) as sb:
        sb.up_all()
        log(f"spread: {len(specs)} uplinks, equal weights and {SPREAD_WEIGHTS}, {' and '.join(BACKENDS)}")
        out["equal"] = spread_checks(sb, cfg, {i: 1 for i in sb.ifaces})
        weights_cfg = "".join(f"[uplinks.{i}]\nweight = {w}\n" for i, w in SPREAD_WEIGHTS.items())
        out["weighted"] = spread_checks(sb, cfg, SPREAD_WEIGHTS, weights_cfg)
        sb.write_config(None)


def set_rate(sb, iface, index, rate, up):
    """Reshape one uplink (tbf on the ISP-side port, and its ifb for the upstream)."""
    burst = "64kbit"
    sb.ns(up, "tc", "qdisc", "change", "dev", iface, "root", "tbf", "rate", rate, "burst", burst,
          "latency", "50ms")
    sb.ns(up, "tc", "qdisc", "change", "dev", f"ifb{index}", "root", "tbf", "rate", rate, "burst",
          burst, "latency", "50ms")


def scenario_unequal(binary, cfg, out):
    specs = ["eth0:static:1", "eth1:static:2"]
    weights_cfg = "[uplinks.eth0]\nweight = 1\n[uplinks.eth1]\nweight = 3\n"
    with Sandbox("uneq", specs, binary, rate="10mbit") as sb:
        set_rate(sb, "eth1", 1, "30mbit", "isp2")
        sb.up_all()
        ifaces = sb.ifaces
        log("goodput unequal (10 + 30 Mbit/s): each alone")
        al = alone(sb, ifaces, cfg["alone_reps"], cfg)
        schemes = {}
        for b in BACKENDS:
            schemes[f"nth_{b}"] = nth_scheme(sb, b)
            schemes[f"nth_w13_{b}"] = nth_scheme(sb, b, weights_cfg)
        schemes["multipath"] = mp_scheme(sb, ifaces)
        schemes["multipath_w13"] = mp_scheme(sb, ifaces, [1, 3])
        log("goodput unequal: bulk")
        bulk = goodput_case(sb, ifaces, cfg["uneq_plist"], lambda p: cfg["uneq_reps"], cfg, schemes)
        log("goodput unequal: web-like")
        web = {name: [] for name in schemes}
        for _ in range(cfg["web_reps"]):
            for name, (setup, teardown) in schemes.items():
                setup()
                web[name].append(sb.agent("web", cfg["web_count"], cfg["web_size"], cfg["web_conc"], *ifaces))
                teardown()
        sb.write_config(None)
        out["unequal"] = {"k": 2, "ifaces": ifaces, "rates_mbit": [10, 30], "alone": al,
                          "runs": bulk, "web": web,
                          "web_params": {"count": cfg["web_count"], "size": cfg["web_size"],
                                         "concurrency": cfg["web_conc"]}}


# --- scenario 2: apply time -------------------------------------------------------------


def execs_of(sb, name, *args):
    """Programs one nm-multiwan run starts (strace -f, execve), itself left out."""
    trace = sb.work / "bench" / f"strace-{name}.txt"
    trace.parent.mkdir(exist_ok=True)
    sb.run("strace", "-f", "-qq", "-e", "trace=execve", "-o", str(trace), "/usr/bin/nm-multiwan", "-q", *args)
    return [os.path.basename(n) for n in re.findall(r'execve\("([^"]+)"', trace.read_text())][1:]


def count_firewall_execs(sb, backend):
    """Processes started by one apply from nothing and by one no-op apply."""
    sb.use(backend)
    sb.nmmw("flush")
    cold = execs_of(sb, f"{backend}-apply", "apply")
    noop = execs_of(sb, f"{backend}-noop", "apply")
    return {"apply": cold, "noop": noop}


def apply_specs(n):
    """n uplinks: ISPs 1..8 (static, one subnet each), then campus uplinks (DHCP, all in
    one subnet) beyond 8."""
    return [f"eth{i}:static:{i + 1}" for i in range(min(n, 8))] + [f"cmp{i}:campus" for i in range(max(0, n - 8))]


def scenario_apply(binary, cfg, results):
    """For each count, a machine with exactly that many uplinks (and no other devices).
    Both backends and the recipe interleaved in batches of 5 in the same sandbox."""
    out = results.setdefault("apply", {})
    reps = cfg["apply_reps"]
    nmmw = ["/usr/bin/nm-multiwan", "-q"]
    batch = 5
    for n in cfg["apply_counts"]:
        with Sandbox(f"apply{n}", apply_specs(n), binary, daemon=True) as sb:
            sb.up_all()
            recipe, clean = install_recipe(sb, sb.ifaces, f"recipe{n}")
            log(f"apply time: {n} uplinks, {' and '.join(BACKENDS)} against the recipe")
            c = {}

            def timed(key, setup, cmd, k=batch):
                r = sb.agent("time", k, json.dumps(setup), json.dumps(cmd))
                if r["errors"]:
                    raise RuntimeError(f"{key}: {r['errors'][:3]}")
                c.setdefault(key + "_ms", []).extend(r["ms"])
                c.setdefault(key + "_cpu_ms", []).extend(r["cpu_ms"])

            # From nothing: each backend after a flush, then the recipe from its clean state.
            for _ in range(max(1, reps // batch)):
                for b in BACKENDS:
                    sb.use(b)
                    timed(f"{b}_cold", nmmw + ["flush"], nmmw + ["apply"])
                sb.nmmw("flush")
                timed("recipe", ["sh", clean], ["sh", recipe])
                sb.run("sh", clean)
            # No-op: each backend in turn applied (untimed), then a batch of no-op runs.
            # The CPU NetworkManager and the bus daemon spend meanwhile is counted too:
            # they answer GetManagedObjects while the run waits.
            in_sync = {}
            peers = {comm: pid for pid in sb.pids("host") for comm in [Path(f"/proc/{pid}/comm").read_text().strip()]
                     if comm in ("NetworkManager", "dbus-daemon")}
            peer_ticks = {b: {comm: 0 for comm in peers} for b in BACKENDS}
            for _ in range(max(1, cfg["noop_reps"] // batch)):
                for b in BACKENDS:
                    sb.use(b)
                    sb.nmmw("apply")
                    t0 = {comm: proc_stat(pid) for comm, pid in peers.items()}
                    timed(f"{b}_noop", None, nmmw + ["apply"])
                    for comm, pid in peers.items():
                        peer_ticks[b][comm] += proc_stat(pid) - t0[comm]
                    in_sync[b] = sb.check_backend(b).get("in_sync")
            hz = os.sysconf("SC_CLK_TCK")
            for b in BACKENDS:
                runs = len(c[f"{b}_noop_ms"])
                c[f"{b}_noop_peer_cpu_ms"] = {comm: t / hz * 1000 / runs for comm, t in peer_ticks[b].items()}
            # The daemon: the same reconcile asked for over D-Bus (`Reconcile`), reading
            # NetworkManager from the mirror its signals keep. Timed around the call (the
            # bus's round trip included) and as the daemon reports it. From nothing:
            # `flush` (untimed) before each call. Probes off: a no-op stays a no-op.
            for b in BACKENDS:
                sb.use(b, "[health]\ntargets = []\n")
                d = Daemon(sb, f"daemon-apply-{b}.log")
                try:
                    for key, setup, k in ((f"{b}_dnoop", None, cfg["noop_reps"]),
                                          (f"{b}_dcold", nmmw + ["flush"], reps)):
                        r = sb.agent("reconcile", k, json.dumps(setup))
                        if r["errors"]:
                            raise RuntimeError(f"{key}: {r['errors'][:3]}")
                        # `flush` removes routes NetworkManager watches: its signals may
                        # wake the daemon, whose reconcile then rebuilds everything before
                        # the call is served. Such a call finds nothing to do; only calls
                        # that applied something count as "from nothing", and a no-op
                        # that applied something would not be one.
                        cold = key.endswith("_dcold")
                        kept = [i for i, n in enumerate(r["changes"]) if (n > 0) == cold]
                        c[key + "_ms"] = [r["ms"][i] for i in kept]
                        c[key + "_daemon_ms"] = [r["daemon_ms"][i] for i in kept]
                        c[key + "_left_out"] = len(r["changes"]) - len(kept)
                finally:
                    d.stop()
            # What a run costs before it does anything: the binary's start and exit.
            timed("start", None, ["/usr/bin/nm-multiwan", "--version"], 20)
            execs = {b: count_firewall_execs(sb, b) for b in BACKENDS}
            sb.nmmw("flush")
            out[str(n)] = {**c, "in_sync": in_sync, "execs": execs,
                           "spawn_overhead_ms": sb.agent("time", 10, "null", json.dumps(["/bin/true"]))["ms"]}


# --- scenario 3: reaction time ----------------------------------------------------------


def react(sb, trigger, avoid, remaining, timeout, mode="avoid", dispatcher_log=True):
    return sb.agent("react", json.dumps(trigger), avoid, json.dumps(sorted(remaining)), 0.02, timeout,
                    str(sb.work / "dispatcher.log") if dispatcher_log else "", mode, timeout=timeout + 60)


def updown_reps(sb, reps, timeout, before=None):
    """nmcli con down up-eth2, then up again: reaction of the balance, `reps` times."""
    a, b, c = isp_addr(1), isp_addr(2), isp_addr(3)
    downs, ups = [], []
    for _ in range(reps):
        if before:
            before()
        downs.append(react(sb, ["nmcli", "con", "down", "up-eth2"], c, {a, b}, timeout))
        ups.append(react(sb, ["nmcli", "--wait", "30", "con", "up", "up-eth2"], c, {a, b, c}, timeout, mode="use"))
        time.sleep(0.3)
    return {"down": downs, "up": ups}


def daemon_available(binary):
    r = subprocess.run([str(binary), "daemon", "--help"], capture_output=True, text=True)
    return r.returncode == 0


class Daemon:
    def __init__(self, sb, logname="daemon.log"):
        self.log = sb.work / logname
        self.f = open(self.log, "w")
        self.p = subprocess.Popen([str(SANDBOX), "exec", sb.name, "/usr/bin/nm-multiwan", "-v", "daemon"],
                                  stdin=subprocess.DEVNULL, stdout=self.f, stderr=self.f)
        deadline = time.time() + 20
        while time.time() < deadline:
            t = self.log.read_text()
            if "reconciled" in t or "in sync" in t:
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"daemon did not start:\n{self.log.read_text()[-2000:]}")

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.f.close()


# Probes at the defaults (issue 11: interval 250 ms, dead after 5 unanswered, back after
# 12 answered), except the target: the sandbox's internet server.
HEALTH_DEFAULTS = """[health]
targets = ["198.51.100.10"]
"""
HEALTH_CONFIG = """[health]
targets = ["198.51.100.10"]
interval_ms = {interval}
down_after = {down}
up_after = {up}
"""


def cut_trigger(sb, isp, on):
    """A command the agent can run from the host's mount namespace to black-hole (or
    restore) an ISP's upstream: nsenter into a process of that ISP's namespace."""
    pid = sb.pids(isp)[0]
    op = "-I" if on else "-D"
    return ["nsenter", "-t", str(pid), "-n", "iptables", op, "FORWARD", "-j", "DROP"]


def scenario_react(binary, cfg, results):
    out = results.setdefault("react", {})
    specs = ["eth0:static:1", "eth1:static:2", "eth2:static:3"]
    reps, timeout = cfg["react_reps"], cfg["react_timeout"]
    a, b, c = isp_addr(1), isp_addr(2), isp_addr(3)
    with Sandbox("disp", specs, binary, dispatcher=True, loose_rp=True, config=fw_config(BACKENDS[0])) as sb:
        sb.up_all()
        log(f"reaction: nmcli down/up through the dispatcher, {' and '.join(BACKENDS)} in turn")
        per = {fw: {"down": [], "up": []} for fw in BACKENDS}
        for _ in range(reps):
            for fw in BACKENDS:
                sb.use(fw)
                sb.nmmw("apply")
                r = updown_reps(sb, 1, timeout)
                per[fw]["down"] += r["down"]
                per[fw]["up"] += r["up"]
        out["dispatcher"] = per
        log("reaction: upstream cut, dispatcher only (no probes)")
        out["cut_dispatcher_only"] = {}
        for fw in BACKENDS:
            sb.use(fw)
            sb.nmmw("apply")
            cut = react(sb, cut_trigger(sb, "isp3", True), c, {a, b}, cfg["cut_timeout_none"], dispatcher_log=False)
            sb.agent("time", 1, "null", json.dumps(cut_trigger(sb, "isp3", False)))
            out["cut_dispatcher_only"][fw] = [cut]
    with Sandbox("rcp", specs, binary, loose_rp=True) as sb:
        sb.up_all()
        recipe, clean = install_recipe(sb, sb.ifaces)

        def reinstall():
            sb.run("sh", clean)
            sb.run("sh", recipe)

        log("reaction: the recipe (no automation)")
        out["recipe"] = updown_reps(sb, max(1, reps // 2), cfg["recipe_timeout"], before=reinstall)
        reinstall()
        cut = react(sb, cut_trigger(sb, "isp3", True), c, {a, b}, cfg["cut_timeout_none"], dispatcher_log=False)
        sb.agent("time", 1, "null", json.dumps(cut_trigger(sb, "isp3", False)))
        out["cut_recipe"] = [cut]
    if not daemon_available(binary):
        out["daemon"] = None
        log("reaction: no daemon subcommand in this build: daemon rows not measured")
        return
    for tag, interval, down, up in cfg["daemon_cases"]:
        health = HEALTH_DEFAULTS if tag == "defaults" else HEALTH_CONFIG.format(interval=interval, down=down, up=up)
        first = tag == cfg["daemon_cases"][0][0]
        with Sandbox(f"dmn{interval}", specs, binary, config=fw_config(BACKENDS[0], health),
                     loose_rp=True, daemon=True) as sb:
            sb.up_all()
            log(f"reaction: daemon, probes every {interval} ms, out after {down}, back after {up}"
                + (": nmcli down/up, upstream cut" if first else ": upstream cut")
                + f"; a daemon per backend in turn")
            updown = {fw: {"down": [], "up": []} for fw in BACKENDS}
            cuts = {fw: {"cut": [], "restore": []} for fw in BACKENDS}
            wait = (max(down, up) + 1) * interval / 1000 + 5
            for rep in range(max(reps if first else 0, cfg["cut_reps"])):
                for fw in BACKENDS:
                    sb.use(fw, health)
                    d = Daemon(sb, f"daemon-{fw}.log")
                    try:
                        sb.check_backend(fw)
                        if first and rep < reps:
                            r = updown_reps(sb, 1, timeout)
                            updown[fw]["down"] += r["down"]
                            updown[fw]["up"] += r["up"]
                        if rep < cfg["cut_reps"]:
                            cuts[fw]["cut"].append(react(sb, cut_trigger(sb, "isp3", True), c, {a, b}, wait,
                                                         dispatcher_log=False))
                            cuts[fw]["restore"].append(react(sb, cut_trigger(sb, "isp3", False), c, {a, b, c}, wait,
                                                             mode="use", dispatcher_log=False))
                    finally:
                        d.stop()
                        out.setdefault("daemon_logs", {}).setdefault(tag, {})[fw] = d.log.read_text()[-4000:]
            if first:
                out["daemon"] = updown
            out[f"cut_daemon_{tag}"] = {"interval_ms": interval, "down_after": down, "up_after": up, **cuts}


# --- scenario 4: data-plane cost --------------------------------------------------------


def iperf(sb, seconds):
    o = sb.run("iperf3", "-c", SERVER, "-p", "5201", "-R", "-t", str(seconds), "-O", "1", "-J", check=False)
    try:
        return json.loads(o)["end"]["sum_received"]["bits_per_second"] / 1e6
    except (ValueError, KeyError):
        return None


def scenario_dataplane(binary, cfg, results):
    """One unshaped iperf3 stream without any ruleset, with each backend's and with the
    recipe's. Every repetition runs each variant once, in an order rotated from one
    repetition to the next, so that drift on a shared machine and the position in the
    repetition hit all alike; ratios are taken within a repetition."""
    # rp_filter loosened as NetworkManager does on a real machine, so that the recipe
    # (which has no answer to a strict one) carries traffic too, for reference.
    with Sandbox("dp", ["eth0:static:1", "eth1:static:2"], binary, loose_rp=True) as sb:
        sb.up_all()
        recipe, clean = install_recipe(sb, sb.ifaces)
        variants = {"none": (None, None)}
        for fw in BACKENDS:
            variants[fw] = ((lambda fw=fw: (sb.use(fw), sb.nmmw("apply"), sb.check_backend(fw))),
                            (lambda: sb.nmmw("flush")))
        variants["recipe"] = ((lambda: sb.run("sh", recipe)), (lambda: sb.run("sh", clean)))
        names = list(variants)
        log(f"data plane: single stream, unshaped: {', '.join(names)}, {cfg['dp_reps']} rounds")
        sb.nmmw("flush")
        sb.run("sh", clean)
        runs, order = rotated_rounds(variants, cfg["dp_reps"], lambda: iperf(sb, cfg["dp_seconds"]))
        results["dataplane"] = {"mbps": runs, "order": order, "seconds": cfg["dp_seconds"]}


# --- scenario 8: router (issue 12) -----------------------------------------------------

ROUTER_THROUGHPUT_GOAL = 0.97  # forwarded stream through the ruleset, against plain forwarding
ROUTER_SPREAD_GOAL_PCT = 5.0  # 256 LAN clients x 4 connections: max deviation from even
ROUTER_CLIENTS = 256
ROUTER_CONNS = 4
ROUTER_IN_FLIGHT = 32  # new connections open at once, as from many clients
# The LAN's shared connection widened from the sandbox's /24 to a /23, so that 256 client
# addresses fit beside the router's own: 10.42.0.128 .. 10.42.1.127 (all host addresses
# of 10.42.0.0/23), static on the one client namespace, in the shared range.
ROUTER_LAN = "10.42.0.1/23"


def router_client_addrs():
    return [f"10.42.{(128 + i) // 256}.{(128 + i) % 256}" for i in range(ROUTER_CLIENTS)]


# Run in the LAN client's namespace: every address opens its connections to the server's
# echo port (bound to that source address), IN_FLIGHT at a time; prints what the server saw for
# each (the uplink's ISP address after both NATs), as JSON.
ROUTER_CLIENT = r"""
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
server, conns, in_flight, addrs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
def one(src):
    try:
        with socket.create_connection((server, 7000), timeout=5, source_address=(src, 0)) as s:
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
            return data.decode().strip() or "FAIL empty reply"
    except OSError as e:
        return f"FAIL {e.__class__.__name__}"
jobs = [a for _ in range(conns) for a in addrs]
with ThreadPoolExecutor(in_flight) as ex:
    seen = list(ex.map(one, jobs))
tally = {}
for x in seen:
    key = "FAIL" if x.startswith("FAIL") else x
    tally[key] = tally.get(key, 0) + 1
print(json.dumps(tally))
"""


def router_spread(sb, uplink_of):
    """ROUTER_CLIENTS x ROUTER_CONNS new connections from the LAN: per uplink, counted by
    the address the server saw, and the largest deviation from an even share in %."""
    sb.run("conntrack", "-D", "-p", "tcp", "--orig-port-dst", "7000", check=False)
    out = sb.ns("c1", PY, "-c", ROUTER_CLIENT, SERVER, str(ROUTER_CONNS), str(ROUTER_IN_FLIGHT),
                *router_client_addrs())
    seen = json.loads(out.strip().splitlines()[-1])
    tally = {uplink_of.get(a, a): n for a, n in seen.items()}
    n = ROUTER_CLIENTS * ROUTER_CONNS
    even = n / len(uplink_of)
    dev = max(abs(tally.get(u, 0) - even) for u in uplink_of.values()) / even * 100
    return {"n": n, "tally": tally, "even": even, "max_dev_pct": dev, "failed": seen.get("FAIL", 0)}


def router_iperf(sb, seconds):
    """One TCP stream from the internet's server to the LAN client (iperf3 -R), forwarded
    by the host."""
    o = sb.ns("c1", "iperf3", "-c", SERVER, "-p", "5201", "-R", "-t", str(seconds), "-O", "1", "-J", check=False)
    try:
        return json.loads(o)["end"]["sum_received"]["bits_per_second"] / 1e6
    except (ValueError, KeyError):
        return None


def scenario_router(binary, cfg, results):
    """Router mode (issue 12): a LAN behind the host on a NetworkManager shared connection,
    three unshaped uplinks. 1. One forwarded stream with each backend's ruleset against
    plain forwarding (flushed: NetworkManager's shared NAT over the main table's uplink),
    rounds rotated as in the data-plane scenario. 2. 256 LAN clients x 4 new connections,
    counted per uplink at the server, on each backend (and flushed, for reference)."""
    specs = ["eth0:static:1", "eth1:static:2", "eth2:static:3"]
    out = results.setdefault("router", {})
    with Sandbox("rt", specs, binary) as sb:
        sb.up_all()
        r = subprocess.run([str(SANDBOX), "lan", sb.name, "1"], env=dict(os.environ, SB_QUIET="1"),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"sandbox lan {sb.name} failed:\n{r.stderr[-2000:]}")
        sb.run("nmcli", "connection", "modify", "lan", "ipv4.addresses", ROUTER_LAN)
        sb.up("lan")
        addrs = router_client_addrs()
        batch = sb.work / "router-clients.batch"
        batch.write_text("".join(f"address add {a}/23 dev eth0\n" for a in addrs))
        sb.ns("c1", "ip", "-4", "address", "flush", "dev", "eth0")
        sb.ns("c1", "ip", "-batch", str(batch))
        sb.ns("c1", "ip", "route", "add", "default", "via", "10.42.0.1")
        uplink_of = {isp_addr(k + 1): i for k, i in enumerate(sb.ifaces)}

        variants = {"none": (None, None)}
        for fw in BACKENDS:
            variants[fw] = ((lambda fw=fw: (sb.use(fw), sb.nmmw("apply"), sb.check_backend(fw))),
                            (lambda: sb.nmmw("flush")))
        names = list(variants)
        log(f"router: forwarded single stream, unshaped: {', '.join(names)}, {cfg['router_reps']} rounds")
        sb.nmmw("flush")
        runs, order = rotated_rounds(variants, cfg["router_reps"],
                                     lambda: router_iperf(sb, cfg["router_seconds"]))
        out["throughput"] = {"mbps": runs, "order": order, "seconds": cfg["router_seconds"]}

        log(f"router: {ROUTER_CLIENTS} LAN clients x {ROUTER_CONNS} connections, {' and '.join(BACKENDS)}")
        spread = {"none": [router_spread(sb, uplink_of)]}
        for _ in range(cfg["router_spread_reps"]):
            for fw in BACKENDS:
                sb.use(fw)
                sb.nmmw("apply")
                st = sb.check_backend(fw)
                if not st.get("lans"):
                    raise RuntimeError(f"{sb.name}: status --json shows no LAN on {fw}")
                spread.setdefault(fw, []).append(router_spread(sb, uplink_of))
        sb.nmmw("flush")
        sb.write_config(None)
        out["spread"] = spread
        out["clients"] = ROUTER_CLIENTS
        out["conns_per_client"] = ROUTER_CONNS
        out["in_flight"] = ROUTER_IN_FLIGHT
        out["uplinks"] = sb.ifaces


# --- scenario 5: footprint --------------------------------------------------------------


def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, clock ticks


def vm_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def scenario_footprint(binary, cfg, results):
    out = results.setdefault("footprint", {})
    out["binary_bytes"] = os.path.getsize(binary)
    with tempfile.TemporaryDirectory() as d:
        s = Path(d) / "nm-multiwan"
        shutil.copy(binary, s)
        subprocess.run(["strip", str(s)], check=True)
        out["stripped_bytes"] = os.path.getsize(s)
    if not daemon_available(binary):
        out["daemon"] = None
        return
    specs = ["eth0:static:1", "eth1:static:2", "eth2:static:3"]
    interval = 250  # the default
    health = HEALTH_DEFAULTS
    out["daemon"] = {}
    with Sandbox("foot", specs, binary, config=fw_config(BACKENDS[0], health), daemon=True) as sb:
        sb.up_all()
        for fw in BACKENDS:
            log(f"footprint: daemon at rest, {fw}")
            sb.use(fw, health)
            d = Daemon(sb, f"daemon-{fw}.log")
            try:
                pid = d.p.pid
                time.sleep(cfg["rest_settle"])
                hz = os.sysconf("SC_CLK_TCK")
                t0, c0 = time.time(), proc_stat(pid)
                rss = []
                while time.time() - t0 < cfg["rest_seconds"]:
                    rss.append(vm_rss_kb(pid))
                    time.sleep(1)
                t1, c1 = time.time(), proc_stat(pid)
                out["daemon"][fw] = {
                    "pid_comm": Path(f"/proc/{pid}/comm").read_text().strip(),
                    "rss_kb": rss,
                    "cpu_ticks": c1 - c0,
                    "hz": hz,
                    "seconds": t1 - t0,
                    "cpu_pct": (c1 - c0) / hz / (t1 - t0) * 100,
                    "uplinks_probed": len(specs),
                    "interval_ms": interval,
                }
            finally:
                d.stop()


# --- scenario 6: one wire ---------------------------------------------------------------

ONEWIRE_GOALS = {"split3": 3.6, "split3_wifi": 4.5}  # multiples of one address (issue 13)


def scenario_onewire(binary, cfg, results):
    """A campus network capping each address at 10 Mbit/s (not each port): the wired
    uplink alone (one address), with the Wi-Fi uplink (two), with 3 virtual uplinks on
    the wire (`split eth0 3`: four addresses) and with both (five). Interleaved state by
    state in every repetition; P connections, one after another, as in scenario 1. The
    reference, one address's rate, is measured as scenario 1 measures an uplink alone
    (4 connections): 16 connections through one 10 Mbit/s address lose more packets and
    get less out of it, which would flatter the multiples."""
    p = cfg["onewire_p"]
    with Sandbox("onewire", ["eth0:campus", "wlan0:campus"], binary, rate_per_address="10mbit",
                 config=fw_config(BACKENDS[0])) as sb:
        sb.up("up-eth0")

        def wifi(on):
            up = "up-wlan0" in sb.run("nmcli", "-g", "NAME", "con", "show", "--active")
            if on and not up:
                sb.up("up-wlan0")
            elif up and not on:
                sb.run("nmcli", "--wait", "30", "con", "down", "up-wlan0")

        states = {
            "plain": lambda: (sb.nmmw("unsplit", "eth0"), wifi(False)),
            "wifi": lambda: (sb.nmmw("unsplit", "eth0"), wifi(True)),
            "split3": lambda: (wifi(False), sb.nmmw("split", "eth0", "3")),
            "split3_wifi": lambda: (sb.nmmw("split", "eth0", "3"), wifi(True)),
        }
        runs = {fw: {name: [] for name in ["one", *states]} for fw in BACKENDS}
        uplinks = {}
        log(f"one wire: {', '.join(states)}, P={p}, {' and '.join(BACKENDS)} in turn")
        for _ in range(cfg["onewire_reps"]):
            for name, setup in states.items():
                setup()
                for fw in BACKENDS:
                    sb.use(fw)
                    sb.nmmw("apply")
                    uplinks[name] = len(json.loads(sb.run("/usr/bin/nm-multiwan", "status", "--json"))["uplinks"])
                    if name == "plain":
                        runs[fw]["one"].append(sb.agent("goodput", 4, cfg["warmup"], cfg["window"], "eth0"))
                    runs[fw][name].append(sb.agent("goodput", p, cfg["warmup"], cfg["window"], "eth0", "wlan0"))
        sb.nmmw("unsplit", "eth0")
        results["onewire"] = {"p": p, "rate_per_address": "10mbit", "uplinks": uplinks, "runs": runs}


# --- scenario 7: health (issue 11) -----------------------------------------------------


# Health runs on one backend: the verdicts and resets do not depend on it, and the
# kernel's round is read from nftables' map (round_marks).
HEALTH_BACKEND = "nftables"

LOSSY_CONFIG = """[health]
targets = ["192.0.2.53"]
"""

RESET_CONFIG = """[health]
targets = ["198.51.100.10"]
reset_connections = {reset}
"""


def health_status(sb):
    return json.loads(sb.run("/usr/bin/nm-multiwan", "status", "--json"))


def round_marks(sb):
    """The marks of the IPv4 TCP round, as nftables holds it."""
    out = sb.run("nft", "list", "map", "inet", "nm-multiwan", "round4_tcp", check=False)
    return set(re.findall(r"goto to4_([0-9a-f]{8})", out))


def lossy_run(binary, cfg, out):
    """Every uplink loses 3 % of its packets (each way) at random and its probe target
    answers after 0-50 ms: the daemon at its defaults must never take one out."""
    specs = ["eth0:static:1", "eth1:static:2", "eth2:static:3"]
    seconds = cfg["lossy_seconds"]
    with Sandbox("lossy", specs, binary, config=fw_config(HEALTH_BACKEND, LOSSY_CONFIG), loose_rp=True,
                 daemon=True) as sb:
        sb.up_all()
        for k in (1, 2, 3):
            subprocess.run([str(SANDBOX), "loss", sb.name, f"isp{k}", "3"], check=True, capture_output=True)
            subprocess.run([str(SANDBOX), "slow-echo", sb.name, f"isp{k}", "0", "50"], check=True,
                           capture_output=True)
        d = Daemon(sb)
        try:
            sb.check_backend(HEALTH_BACKEND)
            log(f"health: {seconds} s with 3 % loss and 0-50 ms of delay on every uplink")
            full = round_marks(sb)
            t0 = time.time()
            polls = short = 0
            while time.time() - t0 < seconds:
                polls += 1
                if round_marks(sb) != full:
                    short += 1
                time.sleep(0.5)
            h = health_status(sb)["health"]
            out["lossy"] = {
                "seconds": round(time.time() - t0, 1),
                "polls": polls,
                "polls_not_full": short,
                "uplinks": {
                    i: {k: u.get(k) for k in ("times_out", "rounds", "rounds_failed", "loss_percent",
                                              "median_rtt_ms", "healthy")}
                    for i, u in h["uplinks"].items()
                },
                "false_verdicts": sum(u["times_out"] for u in h["uplinks"].values()),
            }
        finally:
            d.stop()
            out["lossy_log"] = d.log.read_text()[-4000:]


def reset_run(binary, cfg, out, reset):
    """Four downloads over two uplinks, one upstream cut: how long after the verdict
    (the kernel's round without it) the downloads it carried resume elsewhere."""
    specs = ["eth0:static:1", "eth1:static:2"]
    config = fw_config(HEALTH_BACKEND, RESET_CONFIG.format(reset="true" if reset else "false"))
    runs = []
    with Sandbox("rst" if reset else "nrst", specs, binary, rate="20mbit", config=config, loose_rp=True,
                 daemon=True) as sb:
        sb.up_all()
        d = Daemon(sb)
        try:
            sb.check_backend(HEALTH_BACKEND)
            for _ in range(cfg["reset_reps"]):
                time.sleep(3)
                both = round_marks(sb)
                client = subprocess.Popen(
                    [str(SANDBOX), "exec", sb.name, PY, str(REPO / "tests/sandbox/client.py"), "download", "4",
                     "16", "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                time.sleep(3)
                t_cut = time.time()
                sb.ns("isp2", "iptables", "-I", "FORWARD", "-j", "DROP")
                verdict = None
                while time.time() - t_cut < 10:
                    now = time.time()
                    if len(round_marks(sb)) < len(both):
                        verdict = now
                        break
                stdout, _ = client.communicate(timeout=60)
                sb.ns("isp2", "iptables", "-D", "FORWARD", "-j", "DROP")
                downloads = json.loads(stdout.strip().splitlines()[-1])
                resumed = []
                for dl in downloads:
                    if dl[0]["isp"] != isp_addr(2):
                        continue
                    nxt = next((c for c in dl[1:] if c["isp"] and c["isp"] != isp_addr(2) and c["first_byte"]),
                               None)
                    resumed.append(None if nxt is None or verdict is None else nxt["first_byte"] - verdict)
                others_cut = sum(1 for dl in downloads if dl[0]["isp"] == isp_addr(1) and len(dl) > 1)
                runs.append({"verdict_after_cut_s": None if verdict is None else verdict - t_cut,
                             "resumed_after_verdict_s": resumed, "other_uplink_cut": others_cut})
        finally:
            d.stop()
    out["reset" if reset else "no_reset"] = runs


def scenario_health(binary, cfg, results):
    out = results.setdefault("health", {})
    out["backend"] = HEALTH_BACKEND
    for reset in (True, False):
        log(f"health: a download through a dying uplink, reset_connections = {str(reset).lower()}")
        reset_run(binary, cfg, out, reset)
    lossy_run(binary, cfg, out)


# --- table ------------------------------------------------------------------------------


def met(ok):
    return "—" if ok is None else ("yes" if ok else "**no**")


def met_cell(oks):
    """One verdict when the backends agree (or only one has a goal), else one each."""
    given = {fw: ok for fw, ok in oks.items() if ok is not None}
    if not given:
        return "—"
    if len(set(given.values())) == 1 and len(given) == len(oks):
        return met(next(iter(given.values())))
    return "; ".join(f"{fw} {met(ok)}" for fw, ok in given.items())


class Table:
    """Rows of the report: one per scenario and case, both backends side by side. A row
    whose figure does not depend on the backend (the recipe, the binary) has one cell."""

    def __init__(self):
        self.rows = []

    def add(self, scn, case, cells, base, goal, oks=None):
        """cells: {backend: text} (missing backends: "—"), or one text for both."""
        shared = isinstance(cells, str)
        if shared:
            oks = {"both": oks}
        self.rows.append({"scenario": scn, "case": case, "shared": shared,
                          "cells": {"both": cells} if shared else {fw: cells.get(fw, "—") for fw in BACKENDS},
                          "baseline": base, "goal": goal, "met": met_cell(oks or {})})

    def render(self):
        head = ["scenario", "case", *(f"{fw} median [min–max]" for fw in BACKENDS), "baseline median [min–max]",
                "goal", "met?"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            if r["shared"]:
                fws = [r["cells"]["both"]] + ["(same for both)"] * (len(BACKENDS) - 1)
            else:
                fws = [r["cells"][fw] for fw in BACKENDS]
            cells = [r["scenario"], r["case"], *fws, r["baseline"], r["goal"], r["met"]]
            lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
        return "\n".join(lines)


def spread_cell(checks):
    """'eth0 12, eth1 12 (exact in 2/2 checks)' when every check gave the same tally, else each."""
    tallies = [", ".join(f"{i} {n}" for i, n in sorted(c["tally"].items())) or "nothing" for c in checks]
    fails = sum(c["server_saw"].get("FAIL", 0) for c in checks)
    exact = sum(1 for c in checks if c["exact"])
    text = tallies[0] if len(set(tallies)) == 1 else "; ".join(tallies)
    text += f" (exact in {exact}/{len(checks)} checks"
    return text + (f", {fails} failed connections)" if fails else ")")


def dataplane_ratios(dp, fw):
    """Per round: the variant's throughput over that of the round's run without a ruleset."""
    m = dp["mbps"]
    return stats([x / o for x, o in zip(m[fw], m["none"]) if x and o])


def router_ratios(rt, fw):
    """Per round: the forwarded stream's throughput with `fw`'s ruleset over plain forwarding."""
    m = rt["throughput"]["mbps"]
    return stats([x / o for x, o in zip(m[fw], m["none"]) if x and o])


def router_spread_ok(checks):
    return bool(checks) and all(c["max_dev_pct"] <= ROUTER_SPREAD_GOAL_PCT and not c["failed"] for c in checks)


def router_spread_cell(checks):
    """'eth0 341, eth1 342, eth2 341: 0.2 % off even' per check (one text when all agree)."""
    texts = [", ".join(f"{u} {n}" for u, n in sorted(c["tally"].items())) + f": {c['max_dev_pct']:.1f} % off even"
             + (f", {c['failed']} failed" if c["failed"] else "") for c in checks]
    text = texts[0] if len(set(texts)) == 1 else "; ".join(texts)
    if len(checks) > 1:
        text += f" ({len(checks)} checks)"
    return text


def goals_of_issue(R):
    """The goals of the nftables issue, per backend: [(goal, {fw: (text, ok)}, where)]."""
    goals = []
    a = R.get("apply", {})
    c = a.get(str(NOOP_GOAL_AT))
    if c:
        cells = {}
        for fw in BACKENDS:
            s = stats(c[f"{fw}_noop_ms"])
            cells[fw] = (f"{fmt(s, ' ms')}, CPU {stats(c[f'{fw}_noop_cpu_ms'])['median']:.1f} ms",
                         s["median"] <= NOOP_GOAL_MS)
        goals.append((f"no-op reconcile ≤ {NOOP_GOAL_MS:g} ms median at {NOOP_GOAL_AT} uplinks "
                      "(`nm-multiwan apply`, a process)", cells, "2 apply time"))
        if all(f"{fw}_dnoop_ms" in c for fw in BACKENDS):
            cells = {}
            for fw in BACKENDS:
                s = stats(c[f"{fw}_dnoop_ms"])
                cells[fw] = (f"{fmt(s, ' ms')} round trip; the daemon's own "
                             f"{fmt(stats(c[f'{fw}_dnoop_daemon_ms']), ' ms', 2)}",
                             s is not None and s["median"] <= NOOP_GOAL_MS)
            goals.append((f"no-op reconcile ≤ {NOOP_GOAL_MS:g} ms median at {NOOP_GOAL_AT} uplinks "
                          "(the daemon, `Reconcile` over D-Bus, round trip)", cells, "2 apply time"))
    c = a.get("8")
    if c:
        sr = stats(c["recipe_ms"])
        cells = {}
        for fw in BACKENDS:
            sc = stats(c[f"{fw}_cold_ms"])
            rat = ratio(sc, sr)
            cells[fw] = (f"{rat:.2f} × recipe ({sc['median']:.1f} ms against {sr['median']:.1f} ms)",
                         rat <= APPLY_VS_RECIPE_GOAL)
        goals.append((f"apply from nothing at 8 uplinks ≤ {APPLY_VS_RECIPE_GOAL} × the recipe's script "
                      "(`nm-multiwan apply`)", cells, "2 apply time"))
        if all(f"{fw}_dcold_ms" in c for fw in BACKENDS):
            cells = {}
            for fw in BACKENDS:
                sc = stats(c[f"{fw}_dcold_ms"])
                rat = ratio(sc, sr)
                cells[fw] = (f"{times(rat)} recipe ({fmt(sc, ' ms')} round trip against {sr['median']:.1f} ms)",
                             rat is not None and rat <= APPLY_VS_RECIPE_GOAL)
            goals.append((f"apply from nothing at 8 uplinks ≤ {APPLY_VS_RECIPE_GOAL} × the recipe's script "
                          "(the daemon, `Reconcile` over D-Bus)", cells, "2 apply time"))
    dp = R.get("dataplane")
    if dp:
        cells = {}
        for fw in BACKENDS:
            pr = dataplane_ratios(dp, fw)
            cells[fw] = (f"{fmt(pr, '', 3)} of no ruleset", pr is not None and pr["median"] >= DATAPLANE_GOAL)
        goals.append((f"data plane: one unshaped stream keeps ≥ {DATAPLANE_GOAL} of no ruleset", cells,
                      "4 data plane"))
    sp = R.get("spread")
    if sp:
        cells = {}
        for fw in BACKENDS:
            checks = [ch for case in ("equal", "weighted") for ch in sp.get(case, {}).get(fw, [])]
            exact = sum(1 for ch in checks if ch["exact"])
            cells[fw] = (f"exact in {exact}/{len(checks)} checks", bool(checks) and exact == len(checks))
        goals.append(("spread and weights exact (each uplink its weight × rounds)", cells, "1 spread"))
    rt = R.get("router")
    if rt and "throughput" in rt:
        cells = {}
        for fw in BACKENDS:
            pr = router_ratios(rt, fw)
            cells[fw] = (f"{fmt(pr, '', 3)} of plain forwarding",
                         pr is not None and pr["median"] >= ROUTER_THROUGHPUT_GOAL)
        goals.append((f"router (issue 12): forwarded stream keeps ≥ {ROUTER_THROUGHPUT_GOAL} of plain forwarding",
                      cells, "8 router"))
    if rt and "spread" in rt:
        cells = {}
        for fw in BACKENDS:
            checks = rt["spread"].get(fw, [])
            worst = max((c["max_dev_pct"] for c in checks), default=None)
            cells[fw] = ("—" if worst is None else f"at most {worst:.1f} % off even in {len(checks)} checks",
                         router_spread_ok(checks))
        goals.append((f"router (issue 12): {rt['clients']} clients × {rt['conns_per_client']} connections within "
                      f"{ROUTER_SPREAD_GOAL_PCT:g} % of even", cells, "8 router"))
    return goals


def render_goals(goals):
    head = ["goal (issue)", *BACKENDS, "met?", "rows"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for goal, cells, where in goals:
        verdict = met_cell({fw: cells[fw][1] for fw in BACKENDS})
        lines.append("| " + " | ".join([goal, *(cells[fw][0] for fw in BACKENDS), verdict, where]) + " |")
    return "\n".join(lines)


def cut_case_order(key):
    """The health defaults first, then the other cases (older runs: by interval, longest first)."""
    case = key[len("cut_daemon_"):]
    if case == "defaults":
        return (0, 0)
    return (1, -int(case)) if case.isdigit() else (1, 0)


def build_table(R):
    t = Table()
    row = t.add

    def spread_rows(label, spread, weights):
        checks = {fw: spread.get(fw) or [] for fw in BACKENDS}
        c0 = next((c[0] for c in checks.values() if c), None)
        if c0 is None:
            return
        row("1 spread", f"{label}: {c0['n']} new connections, {c0['n'] // c0['round']} rounds of {c0['round']}"
            f" (weights {weights})",
            {fw: spread_cell(c) for fw, c in checks.items() if c},
            "expected " + ", ".join(f"{i} {n}" for i, n in sorted(c0["expected"].items())),
            "exact: each uplink its weight × rounds", {fw: all(x["exact"] for x in c) for fw, c in checks.items() if c})

    sp = R.get("spread")
    if sp:
        if "equal" in sp:
            spread_rows("5 uplinks (3 ISPs, 2 campus)", sp["equal"], "equal")
        if "weighted" in sp:
            spread_rows("5 uplinks (3 ISPs, 2 campus)", sp["weighted"],
                        ":".join(str(w) for w in SPREAD_WEIGHTS.values()))

    g = R.get("goodput", {})
    for tag in ("k2", "k3", "campus"):
        if tag not in g:
            continue
        c = g[tag]
        k = c["k"]
        alone = sum(stats([r["mbps"] for r in c["alone"][i]])["median"] for i in c["ifaces"])
        c["alone_sum_mbps"] = alone
        label = {"k2": "K=2", "k3": "K=3", "campus": "campus K=2 (one subnet, one gateway)"}[tag]
        mp_runs = c["runs"]["multipath"]
        for p in sorted(mp_runs, key=int):
            mp = [r["mbps"] for r in mp_runs[p]]
            sm = stats(mp)
            hit_m = sum(1 for x in mp if x >= GOODPUT_GOAL * alone)
            goal_applies = int(p) >= 2 * k
            cells, oks = {}, {}
            for fw in BACKENDS:
                nth = [r["mbps"] for r in c["runs"][f"nth_{fw}"][p]]
                sn = stats(nth)
                hit_n = sum(1 for x in nth if x >= GOODPUT_GOAL * alone)
                cells[fw] = (f"{fmt(sn)} = {sn['median'] / alone:.3f} of sum; ≥0.97: {hit_n}/{len(nth)}; "
                             f"{ratio(sn, sm):.2f}× multipath")
                oks[fw] = (sn["median"] >= GOODPUT_GOAL * alone) if goal_applies else None
            row("1 goodput", f"{label}, P={p} (sum alone {alone:.1f})", cells,
                f"multipath {fmt(sm)} = {sm['median'] / alone:.3f}; ≥0.97: {hit_m}/{len(mp)}",
                "≥ 0.97 of sum (P ≥ 2K)" if goal_applies else "— (P < 2K)", oks)
    if "unequal" in g:
        c = g["unequal"]
        alone = sum(stats([r["mbps"] for r in c["alone"][i]])["median"] for i in c["ifaces"])
        c["alone_sum_mbps"] = alone
        for p in sorted(c["runs"]["multipath"], key=int):
            for ours, base, lab in (("nth", "multipath", "1:1"), ("nth_w13", "multipath_w13", "weights 1:3")):
                sb_ = stats([r["mbps"] for r in c["runs"][base][p]])
                cells = {}
                for fw in BACKENDS:
                    so = stats([r["mbps"] for r in c["runs"][f"{ours}_{fw}"][p]])
                    cells[fw] = f"{fmt(so)} = {so['median'] / alone:.3f} of sum; {ratio(so, sb_):.2f}× multipath"
                row("1 goodput", f"10+30 Mbit/s, {lab}, bulk P={p} (sum alone {alone:.1f})", cells,
                    f"multipath {fmt(sb_)}", "—")
        w = c["web"]
        wp = c["web_params"]
        desc = f"{wp['count']}×{wp['size'] // 1024} KiB, ≤{wp['concurrency']} at once"
        s = {k: stats([r["mbps"] for r in v]) for k, v in w.items()}
        t_ = {k: stats([r["total_s"] for r in v]) for k, v in w.items()}
        row("1 goodput", f"10+30, web-like {desc}: weights 1:3 (1:1 in brackets)",
            {fw: f"{fmt(s[f'nth_w13_{fw}'])} Mbit/s, {fmt(t_[f'nth_w13_{fw}'], ' s', 2)} "
                 f"(1:1 {fmt(s[f'nth_{fw}'])}); {ratio(s[f'nth_w13_{fw}'], s['multipath_w13']):.2f}× multipath 1:3"
             for fw in BACKENDS},
            f"multipath 1:3 {fmt(s['multipath_w13'])} (1:1 {fmt(s['multipath'])})", "— (shows what weights buy)")

    a = R.get("apply", {})
    counts = sorted(int(n) for n in a if n.isdigit())
    for n in counts:
        c = a[str(n)]
        sr = stats(c["recipe_ms"])
        cpu_r = stats(c["recipe_cpu_ms"])
        start = stats(c.get("start_ms", []))
        cells, oks = {}, {}
        for fw in BACKENDS:
            sc = stats(c[f"{fw}_cold_ms"])
            rat = ratio(sc, sr)
            cells[fw] = f"{fmt(sc, ' ms')}; CPU {stats(c[f'{fw}_cold_cpu_ms'])['median']:.1f} ms; {rat:.2f}× recipe"
            oks[fw] = rat <= APPLY_VS_RECIPE_GOAL if n == 8 else None
        row("2 apply time", f"{n} uplink{'s' if n > 1 else ''}, from nothing to balanced", cells,
            f"recipe script {fmt(sr, ' ms')}; CPU {cpu_r['median']:.1f} ms",
            f"≤ {APPLY_VS_RECIPE_GOAL} × recipe at 8 uplinks" if n == 8 else "—", oks)
        cells, oks = {}, {}
        for fw in BACKENDS:
            sn = stats(c[f"{fw}_noop_ms"])
            peers = c.get(f"{fw}_noop_peer_cpu_ms", {})
            peer = "; meanwhile " + " + ".join(f"{k} {v:.1f}" for k, v in sorted(peers.items())) + " ms CPU" \
                if peers else ""
            cells[fw] = (f"{fmt(sn, ' ms')}; CPU {stats(c[f'{fw}_noop_cpu_ms'])['median']:.1f} ms{peer}; "
                         f"in sync: {c['in_sync'].get(fw)}")
            oks[fw] = sn["median"] <= NOOP_GOAL_MS if n == NOOP_GOAL_AT else None
        row("2 apply time", f"{n} uplink{'s' if n > 1 else ''}, no-op reconcile (wall time of "
            "`nm-multiwan apply`, process start included)", cells,
            f"binary start and exit alone (`--version`): {fmt(start, ' ms')}" if start else "—",
            f"≤ {NOOP_GOAL_MS:g} ms median at {NOOP_GOAL_AT} uplinks" if n == NOOP_GOAL_AT else "—", oks)
    for n in counts:
        c = a[str(n)]
        if not all(f"{fw}_dnoop_ms" in c for fw in BACKENDS):
            continue
        sr = stats(c["recipe_ms"])
        cells, oks = {}, {}
        for fw in BACKENDS:
            sc = stats(c[f"{fw}_dcold_ms"])
            rat = ratio(sc, sr)
            cells[fw] = (f"{fmt(sc, ' ms')} round trip; the daemon's own "
                         f"{fmt(stats(c[f'{fw}_dcold_daemon_ms']), ' ms')}; {times(rat)} recipe"
                         f"{counted(c, f'{fw}_dcold')}")
            oks[fw] = (rat is not None and rat <= APPLY_VS_RECIPE_GOAL) if n == 8 else None
        row("2 apply time", f"{n} uplink{'s' if n > 1 else ''}, from nothing, in the daemon (`flush`, then "
            "`Reconcile` over D-Bus)", cells, f"recipe script {fmt(sr, ' ms')}",
            f"≤ {APPLY_VS_RECIPE_GOAL} × recipe at 8 uplinks" if n == 8 else "—", oks)
        cells, oks = {}, {}
        for fw in BACKENDS:
            sn = stats(c[f"{fw}_dnoop_ms"])
            cells[fw] = (f"{fmt(sn, ' ms')} round trip; the daemon's own "
                         f"{fmt(stats(c[f'{fw}_dnoop_daemon_ms']), ' ms', 2)}{counted(c, f'{fw}_dnoop')}")
            oks[fw] = (sn is not None and sn["median"] <= NOOP_GOAL_MS) if n == NOOP_GOAL_AT else None
        row("2 apply time", f"{n} uplink{'s' if n > 1 else ''}, no-op reconcile in the daemon (`Reconcile` over "
            "D-Bus, NetworkManager read from the daemon's mirror)", cells, "—",
            f"≤ {NOOP_GOAL_MS:g} ms median at {NOOP_GOAL_AT} uplinks" if n == NOOP_GOAL_AT else "—", oks)
    if len(counts) >= 2:
        lo, hi = str(counts[0]), str(counts[-1])
        lin = counts[-1] / counts[0]
        g_rec = stats(a[hi]["recipe_ms"])["median"] / stats(a[lo]["recipe_ms"])["median"]
        cells, oks = {}, {}
        for fw in BACKENDS:
            g_ours = stats(a[hi][f"{fw}_cold_ms"])["median"] / stats(a[lo][f"{fw}_cold_ms"])["median"]
            g_noop = stats(a[hi][f"{fw}_noop_ms"])["median"] / stats(a[lo][f"{fw}_noop_ms"])["median"]
            cells[fw] = f"×{g_ours:.2f} (no-op ×{g_noop:.2f})"
            oks[fw] = g_ours <= lin / 2
        row("2 apply time", f"growth {lo}→{hi} uplinks (linear: ×{lin:.0f})", cells, f"recipe ×{g_rec:.2f}",
            f"well below linear (≤ ×{lin / 2:.0f})", oks)
    if counts:
        execs = {fw: [a[str(n)]["execs"][fw] for n in counts] for fw in BACKENDS}
        cells, oks = {}, {}
        for fw in BACKENDS:
            if fw == "nftables":
                none = all(not e["apply"] and not e["noop"] for e in execs[fw])
                # The issue's bar: no `nft` process on the hot path, none at all on a no-op.
                # From nothing (no state file) the other backend is read for leftovers.
                hot = all(not e["noop"] and "nft" not in e["apply"] for e in execs[fw])
                cells[fw] = "none at any count, from nothing or no-op (netlink only)" if none else \
                    "; ".join(f"{n}: from nothing {', '.join(e['apply']) or 'none'}, no-op "
                              f"{', '.join(e['noop']) or 'none'}" for n, e in zip(counts, execs[fw]))
                oks[fw] = hot
            else:
                one = all(sum(1 for x in e["apply"] if "restore" in x) == 1 for e in execs[fw])
                cells[fw] = (("1 firewall batch (iptables-restore) at every count" if one else "more than 1 batch")
                             + f"; every run also reads with "
                             f"{', '.join(sorted(set(execs[fw][0]['noop']))) or 'nothing'}")
                oks[fw] = one
        row("2 apply time", "processes started per apply (strace -f -e trace=execve)", cells,
            f"recipe: {2 * counts[-1] + 2} iptables and {3 * counts[-1]} ip processes at {counts[-1]}",
            "nftables: no `nft`, no process on a no-op; iptables: 1 firewall batch", oks)

    r = R.get("react")
    if r:
        def ms(runs, key):
            return stats([x[key] for x in runs])

        def never(runs, key):
            return sum(1 for x in runs if x[key] is None)

        def cell(runs, key):
            s = ms(runs, key)
            nv = never(runs, key)
            if s is None:
                return f"never (> {runs[0]['timeout_s']:.0f} s, {len(runs)}/{len(runs)} runs)"
            txt = fmt(s, " ms", 0)
            if nv:
                txt += f", never in {nv}/{len(runs)}"
            return txt

        def within(runs, key, bound):
            s = ms(runs, key)
            return s is not None and never(runs, key) == 0 and s["max"] <= bound

        d, rc = r["dispatcher"], r["recipe"]
        for key, label in (("first_ms", "new connections all avoid it"),
                           ("balanced_ms", "round rebalanced over the rest")):
            row("3 reaction", f"nmcli con down, dispatcher: {label}",
                {fw: cell(d[fw]["down"], key) for fw in BACKENDS}, "recipe " + cell(rc["down"], key),
                "< 1 s (our reading of \"at once\")",
                {fw: within(d[fw]["down"], key, REACT_GOAL_MS) for fw in BACKENDS})
        row("3 reaction", "nmcli con down: dispatcher script done",
            {fw: fmt(ms(d[fw]["down"], "dispatcher_ms"), " ms", 0) for fw in BACKENDS}, "—", "—")
        for key, label in (("first_ms", "uplink back in use"), ("balanced_ms", "round covers all again")):
            row("3 reaction", f"nmcli con up, dispatcher: {label}", {fw: cell(d[fw]["up"], key) for fw in BACKENDS},
                "recipe " + cell(rc["up"], key), "< 1 s",
                {fw: within(d[fw]["up"], key, REACT_GOAL_MS) for fw in BACKENDS})
        dm = r.get("daemon")
        if dm:
            for ev, key, label in (("down", "balanced_ms", "down: round rebalanced"),
                                   ("up", "first_ms", "up: uplink back in use")):
                row("3 reaction", f"nmcli con {label}, daemon (no dispatcher)",
                    {fw: cell(dm[fw][ev], key) for fw in BACKENDS}, "recipe " + cell(rc[ev], key), "< 1 s",
                    {fw: within(dm[fw][ev], key, REACT_GOAL_MS) for fw in BACKENDS})
            for k in sorted((x for x in r if x.startswith("cut_daemon_")), key=cut_case_order):
                case = r[k]
                # Runs before the health defaults (cut_daemon_<interval>) probed with 3 and 3.
                iv = case.get("interval_ms") or int(k.rsplit("_", 1)[1])
                down, up = case.get("down_after", 3), case.get("up_after", 3)
                defaults = k == "cut_daemon_defaults"
                label = f"probes {iv} ms, out after {down}" + (" (defaults)" if defaults else "")
                if defaults:
                    bound, goal = FAILOVER_GOAL_MS, f"≤ {FAILOVER_GOAL_MS:.0f} ms (issue 11)"
                else:
                    # down_after unanswered probes, one more interval, and the reconcile.
                    bound = (down + 1) * iv + 300
                    goal = f"≤ {bound} ms ((down_after + 1) × interval + 300)"
                row("3 reaction", f"upstream cut → failover, daemon {label}",
                    {fw: cell(case[fw]["cut"], "first_ms")
                     + f" ({statistics.median([x['failures'] for x in case[fw]['cut']]):.0f} failed conns)"
                     for fw in BACKENDS},
                    "dispatcher only " + "; ".join(f"{fw} {cell(r['cut_dispatcher_only'][fw], 'first_ms')}"
                                                   for fw in BACKENDS)
                    + f"; recipe {cell(r['cut_recipe'], 'first_ms')}", goal,
                    {fw: within(case[fw]["cut"], "first_ms", bound) for fw in BACKENDS})
                bound = (up + 1) * iv + 500
                row("3 reaction", f"upstream back → in use again, back after {up} answered, {iv} ms",
                    {fw: cell(case[fw]["restore"], "first_ms") for fw in BACKENDS},
                    "recipe/dispatcher: never left", f"≤ {bound} ms ((up_after + 1) × interval + 500)",
                    {fw: within(case[fw]["restore"], "first_ms", bound) for fw in BACKENDS})
        else:
            row("3 reaction", "daemon: nmcli down/up, upstream cut", "not measured: daemon not available", "—", "—")

    dp = R.get("dataplane")
    if dp:
        m = dp["mbps"]
        cells, oks = {}, {}
        for fw in BACKENDS:
            pr = dataplane_ratios(dp, fw)
            cells[fw] = f"{fmt(stats(m[fw]), ' Mbit/s', 0)}; paired ratios {fmt(pr, '', 3)}"
            oks[fw] = pr is not None and pr["median"] >= DATAPLANE_GOAL
        rp = dataplane_ratios(dp, "recipe")
        row("4 data plane", f"single stream, 2 unshaped uplinks, {len(m['none'])} rounds", cells,
            f"no ruleset {fmt(stats(m['none']), ' Mbit/s', 0)}; the recipe's iptables rules "
            f"{fmt(stats(m['recipe']), ' Mbit/s', 0)}, paired ratios {fmt(rp, '', 3)}",
            f"≥ {DATAPLANE_GOAL} of no ruleset (median of paired ratios)", oks)

    f = R.get("footprint")
    if f:
        row("5 footprint", "binary size", f"{f['stripped_bytes'] / 1e6:.2f} MB stripped",
            f"{f['binary_bytes'] / 1e6:.2f} MB as built", "< 6 MB stripped", f["stripped_bytes"] < STRIPPED_GOAL_MB * 1e6)
        daemons = f.get("daemon")
        if daemons:
            dm = next(iter(daemons.values()))
            rss = {fw: stats([x / 1024 for x in daemons[fw]["rss_kb"] if x]) for fw in BACKENDS if fw in daemons}
            row("5 footprint", f"daemon resident memory ({dm['uplinks_probed']} uplinks probed)",
                {fw: fmt(s, " MiB", 2) for fw, s in rss.items()}, "—", "< 10 MB",
                {fw: s["max"] * 1.048576 < RSS_GOAL_MB for fw, s in rss.items()})
            row("5 footprint", f"daemon CPU at rest ({dm['seconds']:.0f} s, probes every {dm['interval_ms']} ms)",
                {fw: f"{daemons[fw]['cpu_pct']:.2f} % of a core ({daemons[fw]['cpu_ticks']} ticks)"
                 for fw in BACKENDS if fw in daemons}, "—",
                f"< {CPU_REST_GOAL_PCT} % (no measurable CPU beyond probes)",
                {fw: daemons[fw]["cpu_pct"] < CPU_REST_GOAL_PCT for fw in BACKENDS if fw in daemons})
        else:
            row("5 footprint", "daemon memory and CPU", "not measured: daemon not available", "—", "—")

    w = R.get("onewire")
    if w:
        labels = {"plain": "wired uplink alone (one address)",
                  "wifi": "wired + Wi-Fi uplink, no split (two addresses)",
                  "split3": "`split eth0 3`: wire + 3 virtual uplinks (four addresses)",
                  "split3_wifi": "`split eth0 3` + Wi-Fi uplink (five addresses)"}
        s = {fw: {k: stats([r["mbps"] for r in v]) for k, v in w["runs"][fw].items()} for fw in BACKENDS}
        row("6 one wire", f"one address: wired uplink alone, P=4, {w['rate_per_address']} per address",
            {fw: f"{fmt(s[fw]['one'])} Mbit/s (reference)" for fw in BACKENDS}, "—", "—")
        for k, label in labels.items():
            goal = ONEWIRE_GOALS.get(k)
            n = w["uplinks"].get(k, "?")
            x = {fw: ratio(s[fw][k], s[fw]["one"]) for fw in BACKENDS}
            row("6 one wire", f"{label}, {n} uplink{'' if n == 1 else 's'}, P={w['p']}, "
                f"{w['rate_per_address']} per address",
                {fw: f"{fmt(s[fw][k])} Mbit/s = {x[fw]:.2f}× one address" for fw in BACKENDS},
                "one address: " + "; ".join(f"{fw} {fmt(s[fw]['one'])}" for fw in BACKENDS),
                f"≥ {goal}× one address" if goal else "—",
                {fw: (x[fw] >= goal) if goal else None for fw in BACKENDS})

    h = R.get("health")
    if h:
        # Measured on one backend only (see scenario_health): the other's column stays empty.
        fw = h.get("backend", BACKENDS[0])

        def resumed(key):
            runs = h.get(key, [])
            return [x for r in runs for x in r["resumed_after_verdict_s"]], runs

        with_reset, runs = resumed("reset")
        without, _ = resumed("no_reset")
        sw = stats([x * 1000 for x in with_reset if x is not None])
        so = stats([x * 1000 for x in without if x is not None])
        never_w = sum(1 for x in with_reset if x is None)
        cut_others = sum(r["other_uplink_cut"] for r in runs)
        verdict = stats([r["verdict_after_cut_s"] * 1000 for r in runs if r["verdict_after_cut_s"] is not None])
        if runs:
            rat = ratio(sw, so)
            row("7 health", f"download through a dying uplink, retried on error: resumed after the verdict "
                f"(verdict {fmt(verdict, ' ms', 0)} after the cut; {len(with_reset)} downloads)",
                {fw: f"reset: {fmt(sw, ' ms', 0)}" + (f", never in {never_w}" if never_w else "")
                 + f"; downloads on the other uplink cut: {cut_others}"},
                f"no reset: {fmt(so, ' ms', 0)} (the client's own 10 s timeout)"
                + (f"; reset/no reset {rat:.2f}" if rat is not None else ""),
                f"≤ {RESUME_GOAL_S * 1000:.0f} ms (issue 11)",
                {fw: sw is not None and never_w == 0 and cut_others == 0 and sw["max"] <= RESUME_GOAL_S * 1000})
        lossy = h.get("lossy")
        if lossy:
            u = lossy["uplinks"].values()
            sent = sum(x["rounds"] for x in u)
            lost = sum(x["rounds_failed"] for x in u)
            rtt = [x["median_rtt_ms"] for x in u if x["median_rtt_ms"] is not None]
            row("7 health", f"{lossy['seconds'] / 60:.0f} min, {len(lossy['uplinks'])} uplinks losing 3 % of "
                f"packets each way, target answering after 0-50 ms, defaults: false verdicts",
                {fw: f"{lossy['false_verdicts']} ({sent} probes, {100 * lost / max(sent, 1):.1f} % lost; "
                 f"median round trip {min(rtt, default=0):.0f}-{max(rtt, default=0):.0f} ms; round short of "
                 f"an uplink in {lossy['polls_not_full']}/{lossy['polls']} polls)"},
                "—", "0", {fw: lossy["false_verdicts"] == 0 and lossy["polls_not_full"] == 0})

    rt = R.get("router")
    if rt and "throughput" in rt:
        m = rt["throughput"]["mbps"]
        cells, oks = {}, {}
        for fw in BACKENDS:
            pr = router_ratios(rt, fw)
            cells[fw] = f"{fmt(stats(m[fw]), ' Mbit/s', 0)}; paired ratios {fmt(pr, '', 3)}"
            oks[fw] = pr is not None and pr["median"] >= ROUTER_THROUGHPUT_GOAL
        row("8 router", f"one forwarded stream, LAN client ← internet, {len(rt['uplinks'])} unshaped uplinks, "
            f"{len(m['none'])} rounds", cells,
            f"plain forwarding (flushed: NetworkManager's shared NAT) {fmt(stats(m['none']), ' Mbit/s', 0)}",
            f"≥ {ROUTER_THROUGHPUT_GOAL} of plain forwarding (median of paired ratios)", oks)
    if rt and "spread" in rt:
        sp = rt["spread"]
        n = rt["clients"] * rt["conns_per_client"]
        row("8 router", f"{rt['clients']} LAN clients × {rt['conns_per_client']} new connections ({n}"
            + (f", {rt['in_flight']} at once" if "in_flight" in rt else "")
            + f"), {len(rt['uplinks'])} uplinks, counted at the server",
            {fw: router_spread_cell(sp[fw]) for fw in BACKENDS if sp.get(fw)},
            "plain forwarding: " + router_spread_cell(sp["none"]) if sp.get("none") else "—",
            f"≤ {ROUTER_SPREAD_GOAL_PCT:g} % off even on every uplink, none failed",
            {fw: router_spread_ok(sp.get(fw, [])) for fw in BACKENDS})
    return t


# --- plots (hand-written SVG) -----------------------------------------------------------

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def svg_chart(title, xlabel, ylabel, series, xs, xlog=False, hlines=(), path=None):
    """series: [(name, color, dash, {x: stats})]; whiskers show min–max."""
    W, H, L, Rm, T, B = 900, 460, 70, 290, 40, 55
    pw, ph = W - L - Rm, H - T - B
    allv = [s["max"] for _, _, _, pts in series for s in pts.values() if s] + [v for _, v, _ in hlines]
    ymax = max(allv) * 1.1 if allv else 1
    import math

    pad = 0.04 * pw  # keep the first and last points off the axes

    def xpos(x):
        if xlog:
            lo, hi = math.log2(min(xs)), math.log2(max(xs))
            return L + pad + (math.log2(x) - lo) / ((hi - lo) or 1) * (pw - 2 * pad)
        lo, hi = min(xs), max(xs)
        return L + pad + (x - lo) / ((hi - lo) or 1) * (pw - 2 * pad)

    def ypos(y):
        return T + ph - y / ymax * ph

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
         f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
         f'<text x="{L}" y="22" font-size="15" font-weight="bold">{title}</text>',
         f'<line x1="{L}" y1="{T + ph}" x2="{L + pw}" y2="{T + ph}" stroke="black"/>',
         f'<line x1="{L}" y1="{T}" x2="{L}" y2="{T + ph}" stroke="black"/>']
    step = 10 ** math.floor(math.log10(ymax / 5)) if ymax > 0 else 1
    for m in (1, 2, 5, 10):
        if ymax / (step * m) <= 8:
            step *= m
            break
    y = 0.0
    while y <= ymax:
        o.append(f'<line x1="{L}" y1="{ypos(y):.1f}" x2="{L + pw}" y2="{ypos(y):.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{L - 6}" y="{ypos(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
        y += step
    for x in xs:
        o.append(f'<text x="{xpos(x):.1f}" y="{T + ph + 18}" text-anchor="middle">{x}</text>')
    o.append(f'<text x="{L + pw / 2}" y="{H - 12}" text-anchor="middle">{xlabel}</text>')
    o.append(f'<text x="16" y="{T + ph / 2}" text-anchor="middle" transform="rotate(-90 16 {T + ph / 2})">'
             f'{ylabel}</text>')
    ly = T + 10
    for name, val, color in hlines:
        o.append(f'<line x1="{L}" y1="{ypos(val):.1f}" x2="{L + pw}" y2="{ypos(val):.1f}" stroke="{color}" '
                 f'stroke-dasharray="2,3"/>')
        o.append(f'<text x="{L + 6}" y="{ypos(val) - 4:.1f}" fill="{color}">{name}</text>')
    for name, color, dash, pts in series:
        xs_s = [x for x in xs if pts.get(x)]
        if not xs_s:
            continue
        d = " ".join(f"{xpos(x):.1f},{ypos(pts[x]['median']):.1f}" for x in xs_s)
        o.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2" '
                 f'{"stroke-dasharray=%s" % chr(34) + dash + chr(34) if dash else ""}/>')
        for x in xs_s:
            s = pts[x]
            o.append(f'<line x1="{xpos(x):.1f}" y1="{ypos(s["min"]):.1f}" x2="{xpos(x):.1f}" '
                     f'y2="{ypos(s["max"]):.1f}" stroke="{color}"/>')
            o.append(f'<circle cx="{xpos(x):.1f}" cy="{ypos(s["median"]):.1f}" r="3" fill="{color}"/>')
        o.append(f'<line x1="{L + pw + 12}" y1="{ly}" x2="{L + pw + 36}" y2="{ly}" stroke="{color}" '
                 f'stroke-width="2" {"stroke-dasharray=%s" % chr(34) + dash + chr(34) if dash else ""}/>')
        o.append(f'<text x="{L + pw + 40}" y="{ly + 4}">{name}</text>')
        ly += 18
    o.append(f'<text x="{L + pw + 12}" y="{ly + 10}" font-size="10" fill="#555">dots: median; bars: min–max</text>')
    o.append("</svg>")
    Path(path).write_text("\n".join(o) + "\n")


def plots(R, outdir):
    a = R.get("apply", {})
    counts = sorted(int(n) for n in a if n.isdigit())
    if counts:
        series = [("recipe script (from nothing)", COLORS[1], "", {n: stats(a[str(n)]["recipe_ms"]) for n in counts})]
        for i, fw in enumerate(BACKENDS):
            color = COLORS[0] if fw == "nftables" else COLORS[3]
            series.append((f"{fw}: apply from nothing", color, "",
                           {n: stats(a[str(n)][f"{fw}_cold_ms"]) for n in counts}))
            series.append((f"{fw}: no-op apply", color, "6,4", {n: stats(a[str(n)][f"{fw}_noop_ms"]) for n in counts}))
        svg_chart("Apply time against the number of uplinks", "uplinks", "milliseconds", series, counts, xlog=True,
                  hlines=[(f"no-op goal {NOOP_GOAL_MS:g} ms", NOOP_GOAL_MS, "#2ca02c")],
                  path=outdir / "apply_time.svg")
    g = R.get("goodput", {})
    series, hl, ps = [], [], set()
    for i, tag in enumerate(t for t in ("k2", "k3") if t in g):
        c = g[tag]
        for j, (name, dash) in enumerate([(f"nth_{fw}", "" if fw == "nftables" else "2,2") for fw in BACKENDS]
                                         + [("multipath", "6,4")]):
            pts = {int(p): stats([r["mbps"] for r in v]) for p, v in c["runs"][name].items()}
            ps.update(pts)
            who = "multipath route" if name == "multipath" else f"nm-multiwan, {name[4:]}"
            series.append((f"K={c['k']} {who}", COLORS[i * 3 + j], dash, pts))
        if "alone_sum_mbps" in c:
            hl.append((f"K={c['k']}: sum alone", c["alone_sum_mbps"], "#777"))
    if series:
        svg_chart("Download goodput against parallel connections (10 Mbit/s uplinks)",
                  "parallel connections P", "Mbit/s", series, sorted(ps), xlog=True, hlines=hl,
                  path=outdir / "goodput.svg")


# --- main -------------------------------------------------------------------------------


def machine():
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        debian = Path("/etc/debian_version").read_text().strip()
    except OSError:
        debian = None
    mem = None
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {"kernel": platform.release(), "debian": debian, "cpus": os.cpu_count(), "cpu": cpu,
            "mem_gib": mem, "loadavg_start": os.getloadavg()}


def config(quick):
    if quick:
        return {
            "full": False, "warmup": 0.4, "window": 1.0, "alone_reps": 1, "reps": 1, "spread_reps": 2,
            "plist": [2, 4, 8], "goodput_cases": ["k2", "k3", "campus", "unequal"], "uneq_plist": [4],
            "uneq_reps": 1,
            "web_reps": 1, "web_count": 24, "web_size": 256 * 1024, "web_conc": 6,
            "spread_rounds": 6, "spread_check_reps": 1,
            "apply_counts": [1, 8, 16], "apply_reps": 5, "noop_reps": 10,
            "react_reps": 1, "react_timeout": 5.0, "recipe_timeout": 3.0, "cut_timeout_none": 3.0, "cut_reps": 1,
            "daemon_cases": [("defaults", 250, 5, 12)],
            "lossy_seconds": 60, "reset_reps": 1,
            "dp_reps": 3, "dp_seconds": 2, "rest_settle": 3, "rest_seconds": 10,
            "onewire_reps": 1, "onewire_p": 16,
            "router_reps": 3, "router_seconds": 2, "router_spread_reps": 1,
        }
    return {
        "full": True, "warmup": 0.5, "window": 2.0, "alone_reps": 3, "reps": 3, "spread_reps": 8,
        "plist": [1, 2, 4, 8, 16], "goodput_cases": ["k2", "k3", "campus", "unequal"], "uneq_plist": [2, 4, 8],
        "uneq_reps": 3, "web_reps": 3, "web_count": 48, "web_size": 256 * 1024, "web_conc": 6,
        "spread_rounds": 12, "spread_check_reps": 2,
        "apply_counts": [1, 4, 8, 16], "apply_reps": 20, "noop_reps": 40,
        "react_reps": 5, "react_timeout": 6.0, "recipe_timeout": 5.0, "cut_timeout_none": 5.0, "cut_reps": 3,
        "daemon_cases": [("defaults", 250, 5, 12), ("old", 1000, 3, 3)],
        "lossy_seconds": 600, "reset_reps": 3,
        "dp_reps": 12, "dp_seconds": 3, "rest_settle": 5, "rest_seconds": 30,
        "onewire_reps": 3, "onewire_p": 16,
        "router_reps": 12, "router_seconds": 3, "router_spread_reps": 2,
    }


def report(R):
    """The printed report: the machine, the table of every scenario (both backends side
    by side), then the goals of the nftables issue. Also stored in R (table, goals)."""
    table = build_table(R)
    goals = goals_of_issue(R)
    R["table"] = table.rows
    R["goals"] = [{"goal": g, "where": where, **{fw: {"figure": cells[fw][0], "met": cells[fw][1]}
                                                 for fw in BACKENDS}} for g, cells, where in goals]
    m = R["machine"]
    scenarios = ", ".join(R.get("durations_s", {})) or "none"
    out = [f"\nnm-multiwan benchmarks ({'quick' if R['quick'] else 'full'} run of {scenarios}, "
           f"{R['duration_s']:.0f} s, {R.get('git', '?')}) on Debian {m['debian']}, kernel {m['kernel']}, "
           f"{m['cpus']} CPUs ({m['cpu']}), {m['mem_gib']} GiB; load average {m['loadavg_start'][0]:.1f} at start, "
           f"{m['loadavg_end'][0]:.1f} at end\n", table.render()]
    if goals:
        out += ["\nGoals of the issues (nftables; router mode, issue 12), both backends:\n", render_goals(goals)]
    return "\n".join(out)


SCENARIOS = {
    "goodput": scenario_goodput,
    "spread": scenario_spread,
    "apply": scenario_apply,
    "react": scenario_react,
    "dataplane": scenario_dataplane,
    "footprint": scenario_footprint,
    "onewire": scenario_onewire,
    "health": scenario_health,
    "router": scenario_router,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    ap.add_argument("--binary")
    ap.add_argument("--table-from", metavar="RESULTS_JSON",
                    help="print the tables of an earlier run's results.json, measure nothing")
    ap.add_argument("--out")
    ap.add_argument("--registry", help="file listing the sandboxes created (for bench/run's trap)")
    args = ap.parse_args()
    if args.table_from:
        R = json.loads(Path(args.table_from).read_text())
        print(report(R))
        return 0
    if not args.binary or not args.out:
        ap.error("--binary and --out are needed to measure")
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    Sandbox.registry = args.registry
    cfg = config(args.quick)
    only = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    for s in only:
        if s not in SCENARIOS:
            sys.exit(f"unknown scenario {s}; known: {', '.join(SCENARIOS)}")
    binary = Path(args.binary).resolve()
    R = {"format": 2, "backends": list(BACKENDS), "quick": args.quick, "machine": machine(), "config": cfg,
         "binary": str(binary), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "durations_s": {}}
    try:
        R["git"] = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                                  text=True).stdout.strip()
    except OSError:
        pass
    t_all = time.perf_counter()
    errors = {}
    for s in only:
        t = time.perf_counter()
        try:
            SCENARIOS[s](binary, cfg, R)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one failing scenario must not lose the others
            import traceback

            errors[s] = traceback.format_exc()
            log(f"scenario {s} failed: {e}")
        R["durations_s"][s] = round(time.perf_counter() - t, 1)
        log(f"scenario {s} done in {R['durations_s'][s]:.0f} s")
        # What is measured so far survives a run cut short (the table comes with --table-from).
        R["duration_s"] = round(time.perf_counter() - t_all, 1)
        R["machine"]["loadavg_end"] = os.getloadavg()
        (outdir / "results.json").write_text(json.dumps(R, indent=1) + "\n")
    R["duration_s"] = round(time.perf_counter() - t_all, 1)
    R["machine"]["loadavg_end"] = os.getloadavg()
    R["errors"] = errors
    try:
        text = report(R)
    except Exception:  # the raw figures are worth keeping even when a table cannot be made of them
        (outdir / "results.json").write_text(json.dumps(R, indent=1) + "\n")
        raise
    (outdir / "results.json").write_text(json.dumps(R, indent=1) + "\n")
    plots(R, outdir)
    print(text)
    print(f"\nraw data: {outdir / 'results.json'}; plots: {outdir / 'apply_time.svg'}, {outdir / 'goodput.svg'}")
    for s, e in errors.items():
        print(f"\nscenario {s} FAILED:\n{e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
