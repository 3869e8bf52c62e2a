// The tunnel's nice value (src/cli/priority.ts): set on every thread, a
// thread that ended meanwhile skipped, a refusal reported.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { setProcessNice } from '../../src/cli/priority.js';

const systemError = (code: string): Error => Object.assign(new Error(`A system error occurred: uv_os_setpriority returned ${code}`), { code: 'ERR_SYSTEM_ERROR', info: { code } });

describe('tunnel priority', () => {
  it('sets every thread the listing names', () => {
    const set: Array<[number, number]> = [];
    const r = setProcessNice(-10, () => [11, 12, 13], (tid, nice) => set.push([tid, nice]));
    assert.deepEqual(set, [[11, -10], [12, -10], [13, -10]]);
    assert.deepEqual(r, { threads: 3, error: undefined });
  });

  it('skips a thread that ended after the listing, reports a refusal once', () => {
    const r = setProcessNice(-5, () => [1, 2, 3, 4], (tid) => {
      if (tid === 2) throw systemError('ESRCH');
      if (tid >= 3) throw systemError('EACCES');
    });
    assert.equal(r.threads, 1);
    assert.match(r.error ?? '', /EACCES/);
  });

  it('without a thread listing, sets the calling thread', () => {
    const set: number[] = [];
    const r = setProcessNice(3, () => { throw new Error('no /proc'); }, (tid) => set.push(tid));
    assert.deepEqual(set, [0]);
    assert.equal(r.threads, 1);
  });

  it('sets every real thread of a process: a child lowers its own priority by one and reads each thread back', () => {
    // Raising a nice value needs no privilege; a child, so this process keeps its own.
    const child = `
      const { readdirSync, readFileSync } = await import('node:fs');
      const { getPriority } = await import('node:os');
      const { setProcessNice } = await import(${JSON.stringify(new URL('../../src/cli/priority.ts', import.meta.url).pathname)});
      const before = getPriority();
      const r = setProcessNice(before + 1);
      const nice = readdirSync('/proc/self/task').map((t) => {
        const stat = readFileSync('/proc/self/task/' + t + '/stat', 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
      });
      process.stdout.write(JSON.stringify({ before, r, nice }));`;
    const out = JSON.parse(execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', child], { encoding: 'utf8' })) as {
      before: number;
      r: { threads: number; error?: string };
      nice: number[];
    };
    assert.equal(out.r.error, undefined);
    assert.ok(out.nice.length > 1, `${out.nice.length} threads (node has V8 and libuv threads)`);
    assert.equal(out.r.threads, out.nice.length, 'every thread set');
    assert.deepEqual(out.nice, out.nice.map(() => out.before + 1), `every thread one step down from ${out.before}`);
  });
});
