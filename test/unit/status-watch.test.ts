// `dp-tcp status --watch` as a script uses it: `--json` lines piped into a
// reader, across an instance that goes away and comes back (a restart), until
// the reader stops reading (`| head -n 3`).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { removeDir, tempDir } from '../helpers/tmp.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const dir = tempDir('dptcp-watch-');
after(() => removeDir(dir));

const doc = JSON.stringify({ role: 'client', version: 'test', pid: 1, tunName: 'ut-watch', uptimeMs: 0, sessions: [] });

describe('status --watch --json', () => {
  it('keeps stdout JSON lines across a restart (the error goes to stderr), and ends quietly when the reader goes away', async () => {
    const file = join(dir, 'status.json');
    writeFileSync(file, doc);
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/index.ts', 'status', '--watch', '--json', '--url', `file://${file}`], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: string[] = [];
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
    let pending = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      pending += c;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      out.push(...lines);
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const until = async (what: string, ok: () => boolean): Promise<void> => {
      const deadline = Date.now() + 15_000;
      while (!ok()) {
        if (Date.now() > deadline) {
          child.kill();
          assert.fail(`${what}: not within 15 s (stdout ${JSON.stringify(out)}, stderr ${JSON.stringify(err)})`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    try {
      await until('the first snapshot', () => out.length >= 1);
      rmSync(file); // the instance is gone (restarting)
      await until('the error while it is gone', () => /cannot read/.test(err) || out.some((l) => /cannot read/.test(l)));
      writeFileSync(file, doc); // and back
      const before = out.length;
      await until('a snapshot once it is back', () => out.length > before && out.at(-1) !== undefined && out.at(-1)!.startsWith('{'));
      for (const l of out) assert.doesNotThrow(() => JSON.parse(l), `every stdout line is JSON: ${l}`);
      // The reader stops reading, as `| head -n 3` does.
      child.stdout.destroy();
      assert.equal(await exited, 0, `ends with exit 0 (stderr: ${err})`);
      assert.doesNotMatch(err, /EPIPE|\n\s+at /, 'and no stack');
    } finally {
      child.kill();
    }
  });
});
