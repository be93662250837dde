#!/usr/bin/env python3
"""Waiting for a worker: how soon a waiter holds it after it is freed, for
`agentlock ... --wait` next to what a spawner would otherwise run: a
`sleep 0.1` polling loop around `agentlock claim`, and `flock -w` on a plain
file (the kernel's own wake-up: the floor). On the fleet store, the same
against `etcdctl lock`. Then arrival order of 20 waiters, and the CPU of 100
idle waiters over 10 s. Medians of N trials, same machine, same run.

Run through scripts/bench-wait.sh (builds the release binary, starts etcd).
"""
import fcntl
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.environ["AGENTLOCK_BIN"]
ETCD = os.environ.get("ETCD_ENDPOINT")
TRIALS = int(os.environ.get("TRIALS", "25"))
DIR = os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="agentlock-bench-wait.")
ENV = dict(os.environ, TMUX_TMPDIR=DIR + "/tmux", AGENTLOCK_TMUX_SERVERS="dir")
ENV.pop("TMUX", None)
ENV.pop("TMUX_PANE", None)
os.makedirs(ENV["TMUX_TMPDIR"], exist_ok=True)


def wait_until(cond, what, limit=30.0):
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.002)


def tickets(w):
    try:
        return [n for n in os.listdir(w + "/.runtime") if n.startswith("agent.lock.wait.")]
    except FileNotFoundError:
        return []


def sleeping(pid):
    """True once `pid` (and every process of its group) sleeps."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "S"
    except FileNotFoundError:
        return False


def settled(pid):
    """Waits until every thread of `pid` sleeps and its CPU time stays the
    same for 50 ms: a network waiter has its watch in place."""
    def snapshot():
        states, ticks = [], 0
        try:
            for t in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{t}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                states.append(fields[0])
                ticks += int(fields[11]) + int(fields[12])
        except FileNotFoundError:
            pass
        return all(s == "S" for s in states), ticks
    end = time.monotonic() + 30
    while time.monotonic() < end:
        idle, before = snapshot()
        time.sleep(0.05)
        idle2, after = snapshot()
        if idle and idle2 and before == after:
            return
    raise SystemExit(f"pid {pid} never settled")


def sleeper():
    return subprocess.Popen(["sleep", "100000"])


def al(*args, check=True):
    return subprocess.run([BIN, *args], env=ENV, check=check, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)


def release_in_process(w):
    """What `agentlock release` does, without the cost of starting it:
    under the guard, remove the lock."""
    fd = os.open(w + "/.runtime/agent.lock.flock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.unlink(w + "/.runtime/agent.lock")
    os.close(fd)


def trial_worker(name):
    w = f"{DIR}/{name}"
    os.makedirs(w, exist_ok=True)
    return w


def waiter_cmd(kind, w, me):
    if kind == "agentlock --wait":
        return [BIN, "claim", "-q", "--wait", "--pid", str(me), w]
    if kind == "poll (sleep 0.1)":
        return ["sh", "-c", f"until {BIN} claim -q --pid {me} {w} 2>/dev/null; do sleep 0.1; done"]
    raise ValueError(kind)


def queued(kind, w, p):
    if kind == "agentlock --wait":
        wait_until(lambda: len(tickets(w)) == 1, "the waiter to queue")
    else:
        # The loop has tried at least once and sleeps.
        time.sleep(0.15)


def freed_case(kind, name, free):
    """A waiter queued on a worker held by a live process, timed from
    `free(worker, holder)` until it exits holding the worker."""
    w = trial_worker(name)
    holder, me = sleeper(), sleeper()
    al("claim", "-q", "--pid", str(holder.pid), w)
    p = subprocess.Popen(waiter_cmd(kind, w, me.pid), env=ENV, stderr=subprocess.DEVNULL)
    queued(kind, w, p)
    t0 = time.perf_counter()
    free(w, holder)
    p.wait()
    dt = time.perf_counter() - t0
    for proc in (holder, me):
        proc.kill(); proc.wait()
    return dt


def release_case(kind, i):
    """Freed by a release (the lock removed under the guard)."""
    return freed_case(kind, f"rel-{kind[:4]}-{i}", lambda w, holder: release_in_process(w))


def kill_case(kind, i):
    """Freed by the holder's death (SIGKILL, no session)."""
    return freed_case(kind, f"kill-{kind[:4]}-{i}", lambda w, holder: holder.kill())


def flock_release(i):
    f = f"{DIR}/flock-rel-{i}"
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    p = subprocess.Popen(["flock", "-w", "30", f, "true"])
    wait_until(lambda: sleeping(p.pid), "flock to block")
    t0 = time.perf_counter()
    fcntl.flock(fd, fcntl.LOCK_UN)
    p.wait()
    dt = time.perf_counter() - t0
    os.close(fd)
    return dt


def flock_kill(i):
    f = f"{DIR}/flock-kill-{i}"
    holder = subprocess.Popen(["sh", "-c", f"exec 9>{f}; flock 9; exec sleep 100000"])
    wait_until(lambda: sleeping(holder.pid) and open(f"/proc/{holder.pid}/comm").read().strip() == "sleep", "the holder")
    p = subprocess.Popen(["flock", "-w", "30", f, "true"])
    wait_until(lambda: sleeping(p.pid), "flock to block")
    t0 = time.perf_counter()
    holder.kill()
    p.wait()
    dt = time.perf_counter() - t0
    holder.wait()
    return dt


def tmux_case(kind, i):
    """Freed by the end of the recorded tmux session (its process is gone)."""
    w = trial_worker(f"tmux-{kind[:4]}-{i}")
    sock = f"{DIR}/tmux/s{i}{kind[:4]}"
    subprocess.run(["tmux", "-S", sock, "new-session", "-d", "-s", "agent", "sleep 100000"],
                   env=ENV, check=True)
    gone, me = sleeper(), sleeper()
    al("claim", "-q", "--pid", str(gone.pid), "--session", "agent", "--tmux-socket", sock, w)
    gone.kill(); gone.wait()
    cmd = waiter_cmd(kind, w, me.pid)
    if kind == "agentlock --wait":
        cmd[1:1] = ["--tmux-socket", sock]
    else:
        cmd[2] = cmd[2].replace(f"{BIN} claim", f"{BIN} --tmux-socket {sock} claim")
    p = subprocess.Popen(cmd, env=ENV, stderr=subprocess.DEVNULL)
    queued(kind, w, p)
    t0 = time.perf_counter()
    subprocess.run(["tmux", "-S", sock, "kill-session", "-t", "agent"], env=ENV, check=True)
    p.wait()
    dt = time.perf_counter() - t0
    me.kill(); me.wait()
    subprocess.run(["tmux", "-S", sock, "kill-server"], env=ENV, stderr=subprocess.DEVNULL)
    return dt


def host_cmd(host, *args):
    return ["unshare", "--uts", "sh", "-c", 'hostname "$1" && shift && exec "$@"', "sh", host,
            BIN, "--store", f"etcd://{ETCD.split('//')[1]}/bench", "--fleet-root", f"{DIR}/town", *args]


def fleet_env(host):
    e = dict(ENV, XDG_RUNTIME_DIR=f"{DIR}/{host}", AGENTLOCK_LEASE_TTL="5")
    os.makedirs(e["XDG_RUNTIME_DIR"], exist_ok=True)
    return e


def fleet_case(i):
    """Host A's holder ends (run's command exits, run deletes the record):
    the waiter on host B, settled (its watch in place), holds it."""
    w = f"{DIR}/town/f{i}"
    os.makedirs(w, exist_ok=True)
    fifo = f"{DIR}/fifo-f{i}"
    os.mkfifo(fifo)
    a = subprocess.Popen(host_cmd("host-a", "run", w, "--", "sh", "-c", f"read x < {fifo}"),
                         env=fleet_env("host-a"), stderr=subprocess.DEVNULL)
    wait_until(lambda: subprocess.run(host_cmd("host-a", "status", "--json", w), env=fleet_env("host-a"),
                                      capture_output=True).stdout.find(b'"held"') >= 0, "A to hold")
    me = sleeper()
    b = subprocess.Popen(host_cmd("host-b", "claim", "-q", "--wait", "--pid", str(me.pid), w),
                         env=fleet_env("host-b"), stderr=subprocess.DEVNULL)
    wait_until(lambda: etcd_count(f"/bench/waiters/f{i}/") == 1, "B to queue")
    settled(b.pid)
    t0 = time.perf_counter()
    with open(fifo, "w") as f:
        f.write("\n")
    b.wait()
    dt = time.perf_counter() - t0
    a.wait()
    host_cmd_run = subprocess.run(host_cmd("host-b", "release", "-q", "--force", w), env=fleet_env("host-b"))
    me.kill(); me.wait()
    return dt


def etcd_count(prefix):
    out = subprocess.run(["etcdctl", "--endpoints", ETCD, "get", "--prefix", "--keys-only", prefix],
                         capture_output=True, env=dict(os.environ, ETCDCTL_API="3")).stdout
    return len([l for l in out.splitlines() if l.strip()])


def etcdctl_case(i):
    """`etcdctl lock` handing over: the holder's command exits, etcdctl
    deletes its key, the waiting etcdctl gets the lock and runs `true`."""
    env = dict(os.environ, ETCDCTL_API="3")
    name = f"bench-lock-{i}"
    fifo = f"{DIR}/fifo-e{i}"
    os.mkfifo(fifo)
    a = subprocess.Popen(["etcdctl", "--endpoints", ETCD, "lock", name, "--", "sh", "-c", f"read x < {fifo}"],
                         env=env, stdout=subprocess.DEVNULL)
    wait_until(lambda: etcd_count(name + "/") == 1, "the holder to lock")
    b = subprocess.Popen(["etcdctl", "--endpoints", ETCD, "lock", name, "--", "true"], env=env,
                         stdout=subprocess.DEVNULL)
    wait_until(lambda: etcd_count(name + "/") == 2, "the waiter to queue")
    settled(b.pid)
    t0 = time.perf_counter()
    with open(fifo, "w") as f:
        f.write("\n")
    b.wait()
    dt = time.perf_counter() - t0
    a.wait()
    return dt


def median_ms(f, *args):
    xs = [f(*args, i) if args else f(i) for i in range(TRIALS)]
    return statistics.median(xs) * 1000


def fairness_file():
    w = trial_worker("fair")
    order = f"{DIR}/fair-order"
    holder = sleeper()
    al("claim", "-q", "--pid", str(holder.pid), w)
    runs = []
    for i in range(20):
        runs.append(subprocess.Popen([BIN, "run", "--wait", w, "--", "sh", "-c", f"echo {i} >> {order}"], env=ENV))
        wait_until(lambda: len(tickets(w)) == i + 1, "the waiter to queue")
    holder.kill(); holder.wait()
    for r in runs:
        r.wait()
    got = [int(l) for l in open(order)]
    if got != list(range(20)):
        print("order:", got)
    return got == list(range(20))


def fairness_fleet():
    w = f"{DIR}/town/fair"
    os.makedirs(w, exist_ok=True)
    order = f"{DIR}/fair-fleet-order"
    holder = sleeper()
    subprocess.run(host_cmd("host-a", "claim", "-q", "--pid", str(holder.pid), w), env=fleet_env("host-a"), check=True)
    runs = []
    for i in range(20):
        host = "host-b" if i % 2 == 0 else "host-a"
        runs.append(subprocess.Popen(host_cmd(host, "run", "--wait", w, "--", "sh", "-c", f"echo {i} >> {order}"),
                                     env=fleet_env(host)))
        wait_until(lambda: etcd_count("/bench/waiters/fair/") == i + 1, "the waiter to queue")
    holder.kill(); holder.wait()
    for r in runs:
        r.wait()
    got = [int(l) for l in open(order)]
    if got != list(range(20)):
        print("order:", got)
    return got == list(range(20))


def cpu_of(pids):
    """CPU seconds so far of `pids` and of their reaped children."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        except FileNotFoundError:
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def idle_cpu(kind, n=100, secs=10):
    """CPU of n idle waiters over `secs`, once all of them wait."""
    w = trial_worker(f"idle-{kind[:4]}")
    holder, me = sleeper(), sleeper()
    al("claim", "-q", "--pid", str(holder.pid), w)
    ps = [subprocess.Popen(waiter_cmd(kind, w, me.pid), env=ENV, stderr=subprocess.DEVNULL,
                           start_new_session=True) for _ in range(n)]
    if kind == "agentlock --wait":
        wait_until(lambda: len(tickets(w)) == n, "the waiters to queue", 120)
    else:
        time.sleep(0.5)
    pids = [p.pid for p in ps]
    t0, start = cpu_of(pids), time.monotonic()
    time.sleep(secs)
    spent, wall = cpu_of(pids) - t0, time.monotonic() - start
    for p in ps:
        os.killpg(p.pid, signal.SIGKILL)
    for p in ps:
        p.wait()
    holder.kill(); me.kill(); holder.wait(); me.wait()
    return spent, wall


def main():
    kinds = ["agentlock --wait", "poll (sleep 0.1)"]
    res = {}
    print(f"# release -> waiter holds it (median of {TRIALS}, ms)")
    res["release"] = {k: median_ms(release_case, k) for k in kinds}
    res["release"]["flock -w"] = median_ms(flock_release)
    print(f"# holder SIGKILLed -> waiter holds it (median of {TRIALS}, ms)")
    res["kill"] = {k: median_ms(kill_case, k) for k in kinds}
    res["kill"]["flock -w"] = median_ms(flock_kill)
    print(f"# tmux session killed -> waiter holds it (median of {TRIALS}, ms)")
    res["tmux"] = {k: median_ms(tmux_case, k) for k in kinds}
    for case in ("release", "kill", "tmux"):
        base = res[case].get("flock -w")
        for k, v in res[case].items():
            ratio = f"x{v / base:6.2f} of flock -w" if base else ""
            poll = res[case]["poll (sleep 0.1)"]
            print(f"{case:8} {k:18} {v:8.2f} ms  {ratio:20} poll/this x{poll / v:6.1f}")
    if ETCD:
        f = median_ms(fleet_case)
        e = median_ms(etcdctl_case)
        print(f"fleet    agentlock --wait   {f:8.2f} ms  x{f / e:6.2f} of etcdctl lock ({e:.2f} ms)")
        res["fleet"] = {"agentlock --wait": f, "etcdctl lock": e}
        res["fair_fleet"] = fairness_fleet()
        print(f"fairness: 20 waiters on two hosts served in arrival order: {res['fair_fleet']}")
    res["fair_file"] = fairness_file()
    print(f"fairness: 20 waiters on one host served in arrival order: {res['fair_file']}")
    for k in kinds:
        cpu, wall = idle_cpu(k)
        res.setdefault("idle", {})[k] = cpu
        print(f"idle     100 x {k:18} CPU {cpu:7.3f} s over {wall:.1f} s")
    json.dump(res, open(os.environ.get("BENCH_JSON", "/dev/null"), "w"), indent=1)


if __name__ == "__main__":
    main()
