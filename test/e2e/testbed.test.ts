// The test helpers themselves: a run stopped by hand (Ctrl-C, a runner's
// SIGTERM) leaves no namespace, process or directory behind.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT, skipReason, waitFor } from '../helpers/netns.js';

const skip = skipReason();

/** Starts a process that builds a testbed, prints its names and waits; resolves with them. */
function holder(): { child: ReturnType<typeof spawn>; names: Promise<{ serverNs: string; clientNs: string; dir: string }> } {
  const code = `
    import { Testbed } from ${JSON.stringify(join(ROOT, 'test/helpers/netns.ts'))};
    const t = await Testbed.create('sig');
    console.log(JSON.stringify({ serverNs: t.serverNs, clientNs: t.clientNs, dir: t.dir }));
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const names = new Promise<{ serverNs: string; clientNs: string; dir: string }>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line !== undefined) resolve(JSON.parse(line) as { serverNs: string; clientNs: string; dir: string });
    });
    child.on('exit', (c) => reject(new Error(`the testbed process exited (${c}) before it printed its names`)));
  });
  return { child, names };
}

const nsExists = (ns: string): boolean => existsSync(`/var/run/netns/${ns}`);

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
});
