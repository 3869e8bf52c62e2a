#!/usr/bin/env python3
"""Where an idle ping's round trip through a tunnel goes, phase by phase.

Records every CPU's syscalls and scheduler events with `perf` while `ping`
runs from a network namespace through a tunnel that is already up (dp-tcp,
OpenVPN: any user-space tunnel that reads and writes its TUN with read(2) and
write(2) and its TCP links with send/recv), then splits each round trip into
the steps below and prints each step's median and mean in µs.

    sudo python3 scripts/rtt-phases.py --netns dp-tcp-client --addr 10.0.0.1

The client tunnel is the process the ping wakes, the server the one the
client's first send wakes. Steps, each from the end of the one before:
  client wakes     ping's sendto to the client's poll returning
  client reads     to its TUN read returning a packet
  client sends     to its first send starting
  first send       that send (the peer's receive runs inside it, on this VM)
  server wakes     to the server's poll (or recv) returning
  server writes    to its TUN write starting
  server sends     to its first send starting (the write, the reply's read)
  reply send       that send
  client wakes     to the client's poll returning
  client writes    to its TUN write starting
  ping woken       to the write waking ping (0 when ping never slept)
  ping runs        to ping being switched in
  ping returns     to ping's recvmsg returning
Tracing slows every syscall by a few µs: compare tunnels traced the same way,
not these figures with untraced ones. Needs perf (linux-perf) and root.
"""
import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

SENDTO, RECVFROM, RECVMSG, READ, WRITE = 44, 45, 47, 0, 1
POLLS = (7, 232, 271, 281)  # poll, epoll_wait, ppoll, epoll_pwait
EVENTS = 'raw_syscalls:sys_enter,raw_syscalls:sys_exit,sched:sched_switch,sched:sched_waking'
LINE = re.compile(r'\s*(\S+)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)')
STEPS = ['client wakes', 'client reads', 'client sends', 'first send', 'server wakes', 'server writes',
         'server sends', 'reply send', 'client wakes (reply)', 'client writes', 'ping woken', 'ping runs',
         'ping returns']


def record(netns, addr, count, interval):
    if shutil.which('perf') is None:
        sys.exit('needs perf: apt-get install linux-perf')
    with tempfile.TemporaryDirectory() as tmp:
        return record_into(f'{tmp}/perf.data', netns, addr, count, interval)


def record_into(data, netns, addr, count, interval):
    ping = ['ip', 'netns', 'exec', netns, 'ping', '-q', '-c', str(count), '-i', str(interval), addr]
    warm = subprocess.run(['ip', 'netns', 'exec', netns, 'ping', '-q', '-c', '100', '-i', str(interval), '-W', '1', addr],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if warm.returncode != 0:
        sys.exit(f'ping {addr} from {netns} failed: {warm.stderr.strip() or "no answer"}')
    r = subprocess.run(['perf', 'record', '-q', '-a', '-e', EVENTS, '-o', data, '--'] + ping,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f'perf record failed: {r.stderr.strip()[-300:]}')
    summary = [l for l in r.stdout.splitlines() if 'rtt' in l]
    out = subprocess.run(['perf', 'script', '-i', data, '-F', 'comm,tid,cpu,time,event,trace'],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True).stdout
    return out, summary[0] if summary else ''


def parse(text):
    events = []
    for line in text.splitlines():
        m = LINE.match(line)
        if m is None or m.group(1) == 'perf':
            continue
        comm, tid, cpu, t, event, trace = m.groups()
        events.append((float(t) * 1e6, comm, int(tid), int(cpu), event, trace))
    return events


def nr(trace):
    return int(trace.split()[1])


def is_exit(e, n):
    return e[4] == 'raw_syscalls:sys_exit' and nr(e[5]) in n


def is_enter(e, n):
    return e[4] == 'raw_syscalls:sys_enter' and nr(e[5]) in n


def woken(e):
    m = re.search(r'pid=(\d+)', e[5])
    return int(m.group(1)) if e[4] == 'sched:sched_waking' and m else None


def cycles(events):
    start = None
    for i, e in enumerate(events):
        if e[1] == 'ping' and is_enter(e, (SENDTO,)):
            start = i
        elif e[1] == 'ping' and is_exit(e, (RECVMSG,)) and e[5].endswith('= 84') and start is not None:
            yield events[start:i + 1]
            start = None


def first(seg, after, cond):
    for e in seg:
        if e[0] >= after and cond(e):
            return e
    return None


def phases(seg):
    """The times of each step of one round trip, or None if it does not follow the pattern."""
    t0 = seg[0][0]
    wake = first(seg, t0, lambda e: e[1] == 'ping' and woken(e) is not None)
    if wake is None:
        return None
    cl = woken(wake)
    marks = [seg[0]]
    a = first(seg, t0, lambda e: e[2] == cl and is_exit(e, POLLS))
    b = first(seg, t0, lambda e: e[2] == cl and is_exit(e, (READ,)) and not e[5].endswith('= -11'))
    c = b and first(seg, b[0], lambda e: e[2] == cl and is_enter(e, (SENDTO,)))
    d = c and first(seg, c[0], lambda e: e[2] == cl and is_exit(e, (SENDTO,)))
    sw = c and first(seg, c[0], lambda e: e[2] == cl and woken(e) is not None and e[1] != 'ping')
    if not (a and b and c and d and sw):
        return None
    sv = woken(sw)
    e1 = first(seg, c[0], lambda e: e[2] == sv and is_exit(e, POLLS + (RECVFROM,)))
    f = first(seg, c[0], lambda e: e[2] == sv and is_enter(e, (WRITE,)))
    g = f and first(seg, f[0], lambda e: e[2] == sv and is_enter(e, (SENDTO,)))
    h = g and first(seg, g[0], lambda e: e[2] == sv and is_exit(e, (SENDTO,)))
    i = g and first(seg, g[0], lambda e: e[2] == cl and is_exit(e, POLLS + (RECVFROM, 24)))
    j = g and first(seg, g[0], lambda e: e[2] == cl and is_enter(e, (WRITE,)))
    if not (e1 and f and g and h and i and j):
        return None
    k = first(seg, j[0], lambda e: e[4] == 'sched:sched_waking' and 'comm=ping' in e[5]) or j
    s = first(seg, k[0], lambda e: e[4] == 'sched:sched_switch' and 'next_comm=ping' in e[5])
    if s is None:
        return None
    marks += [a, b, c, d, e1, f, g, h, i, j, k, s, seg[-1]]
    return [y[0] - x[0] for x, y in zip(marks, marks[1:])], seg[-1][0] - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--netns', required=True, help='the namespace ping runs in (the client side)')
    ap.add_argument('--addr', required=True, help="the tunnel address of the far side")
    ap.add_argument('--count', type=int, default=300)
    ap.add_argument('--interval', type=float, default=0.01)
    args = ap.parse_args()
    text, summary = record(args.netns, args.addr, args.count, args.interval)
    rows = [p for p in (phases(s) for s in cycles(parse(text))) if p is not None]
    if not rows:
        sys.exit('no round trip followed the pattern (is a user-space tunnel carrying the pings?)')
    print(f'{args.addr}: {len(rows)} round trips of {args.count} split (traced ping: {summary.strip()})')
    for n, name in enumerate(STEPS):
        v = [r[0][n] for r in rows]
        print(f'  {name:22} p50 {statistics.median(v):6.1f}  mean {statistics.mean(v):6.1f} µs')
    v = [r[1] for r in rows]
    print(f'  {"round trip":22} p50 {statistics.median(v):6.1f}  mean {statistics.mean(v):6.1f} µs')


if __name__ == '__main__':
    main()
