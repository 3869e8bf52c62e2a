// The test helpers themselves: a run stopped by hand (Ctrl-C, a runner's
// SIGTERM) leaves no namespace, process or directory behind, and what a run
// killed outright (SIGKILL) left is swept by the next one.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT, TESTBED_DIR, TESTBED_NS, skipReason, sweepStale, waitFor } from '../helpers/netns.js';

const skip = skipReason();

interface Names {
  serverNs: string;
  clientNs: string;
  dir: string;
  /** A process the testbed started in its server namespace. */
  sleeper: number;
}

/** Starts a process that builds a testbed, prints its names and waits; resolves with them. */
function holder(): { child: ReturnType<typeof spawn>; names: Promise<Names> } {
  const code = `
    import { Testbed } from ${JSON.stringify(join(ROOT, 'test/helpers/netns.ts'))};
    import { readFileSync } from 'node:fs';
    const t = await Testbed.create('sig');
    const sleeper = t.spawn('server', 'sleep', ['300']);
    // Printed once ip netns exec has joined the namespace and become sleep.
    const comm = () => { try { return readFileSync('/proc/' + sleeper.pid + '/comm', 'utf8').trim(); } catch { return ''; } };
    while (comm() !== 'sleep') await new Promise((r) => setTimeout(r, 20));
    console.log(JSON.stringify({ serverNs: t.serverNs, clientNs: t.clientNs, dir: t.dir, sleeper: sleeper.pid }));
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const names = new Promise<Names>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line !== undefined) resolve(JSON.parse(line) as Names);
    });
    child.on('exit', (c) => reject(new Error(`the testbed process exited (${c}) before it printed its names`)));
  });
  return { child, names };
}

const nsExists = (ns: string): boolean => existsSync(`/var/run/netns/${ns}`);
/** Running (not gone, not a zombie nobody reaped). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
/** The holder's `sleep` still runs under that pid (not a pid since reused by another process). */
function sleeping(pid: number): boolean {
  try {
    return running(pid) && readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sleep';
  } catch {
    return false;
  }
}

describe('test helpers', { skip, timeout: 60_000 }, () => {
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    it(`a testbed whose process gets ${sig} removes its namespaces and directory`, async () => {
      const { child, names } = holder();
      try {
        const n = await names;
        assert.ok(nsExists(n.serverNs) && nsExists(n.clientNs) && existsSync(n.dir), 'the testbed is up');
        const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
        child.kill(sig);
        assert.equal(await exited, sig === 'SIGINT' ? 130 : 143, 'it exits with the signal conventional code');
        await waitFor(() => !nsExists(n.serverNs) && !nsExists(n.clientNs), 'its namespaces removed', 2000);
        assert.equal(existsSync(n.dir), false, 'its directory removed');
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }
    });
  }

  it('what a testbed killed outright (SIGKILL) left, the next testbed sweeps: its processes, namespaces and directory; a live one stays', async () => {
    const dead = holder();
    let live: ReturnType<typeof holder> | undefined;
    let n: Names | undefined;
    try {
      n = await dead.names;
      const exited = new Promise<void>((r) => dead.child.on('exit', () => r()));
      dead.child.kill('SIGKILL');
      await exited;
      // No exit hook ran: everything is still there, and the process in the namespace runs on.
      assert.ok(nsExists(n.serverNs) && nsExists(n.clientNs) && existsSync(n.dir), 'a SIGKILL leaves the testbed behind');
      assert.ok(sleeping(n.sleeper), 'and the process it started in its namespace');
      // The next process's first testbed sweeps before it builds its own.
      live = holder();
      const m = await live.names;
      assert.equal(nsExists(n.serverNs) || nsExists(n.clientNs), false, "the dead run's namespaces removed");
      assert.equal(existsSync(n.dir), false, "the dead run's directory removed");
      await waitFor(() => !sleeping(n!.sleeper), "the process in the dead run's namespace killed", 2000);
      assert.ok(nsExists(m.serverNs) && nsExists(m.clientNs) && existsSync(m.dir) && sleeping(m.sleeper), 'the live testbed untouched');
      // And a sweep from a third process leaves a live testbed alone.
      sweepStale(TESTBED_NS, TESTBED_DIR);
      assert.ok(nsExists(m.serverNs) && nsExists(m.clientNs) && existsSync(m.dir) && sleeping(m.sleeper), 'a sweep leaves a live testbed alone');
      const liveExited = new Promise<void>((r) => live!.child.on('exit', () => r()));
      live.child.kill('SIGTERM');
      await liveExited;
      await waitFor(() => !nsExists(m.serverNs) && !sleeping(m.sleeper), 'the live testbed removed on SIGTERM', 2000);
    } finally {
      for (const h of [dead, live]) if (h && h.child.exitCode === null && h.child.signalCode === null) h.child.kill('SIGKILL');
      if (n !== undefined && sleeping(n.sleeper)) process.kill(n.sleeper, 'SIGKILL');
      sweepStale(TESTBED_NS, TESTBED_DIR);
    }
  });
});
