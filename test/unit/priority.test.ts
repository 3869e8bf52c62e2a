// The tunnel's nice value (src/cli/priority.ts): set on every thread, a
// thread that ended meanwhile skipped, a refusal reported.
import assert from 'node:assert/strict';
import { getPriority } from 'node:os';
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

  it('sets the real threads of this process (to the value they have)', () => {
    const now = getPriority();
    const r = setProcessNice(now);
    assert.equal(r.error, undefined);
    assert.ok(r.threads > 1, `${r.threads} threads (node has V8 and libuv threads)`);
    assert.equal(getPriority(), now);
  });
});
