// The --stats-file writer (src/ops/stats-file.ts): every second in the
// background, one write at a time; on exit at once, and after a background
// write in flight, so that the last snapshot on disk is the exit's.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { createLogger } from '../../src/log.js';
import { StatsFile } from '../../src/ops/stats-file.js';
import { removeDir, tempDir } from '../helpers/tmp.js';

describe('stats file', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) removeDir(d);
  });
  function setup(): { dir: string; file: string; lines: string[]; doc: { n: number } } {
    const dir = tempDir('dptcp-stats-');
    dirs.push(dir);
    const lines: string[] = [];
    const doc = { n: 0 };
    return { dir, file: join(dir, 'stats.json'), lines, doc };
  }
  const read = (file: string): { n: number; time: string } => JSON.parse(readFileSync(file, 'utf8')) as { n: number; time: string };
  const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 50));

  it('a write in the background leaves the document, and nothing else, once it settles', async () => {
    const { dir, file, lines, doc } = setup();
    const s = new StatsFile(file, () => ({ ...doc }), createLogger('debug', 'test', { sink: (l) => lines.push(l) }));
    doc.n = 1;
    s.writeSoon();
    doc.n = 2;
    s.writeSoon(); // the first is still in flight: skipped
    await settle();
    assert.equal(read(file).n, 1);
    assert.ok(Number.isFinite(Date.parse(read(file).time)));
    assert.deepEqual(readdirSync(dir), ['stats.json'], 'no temporary file left');
    assert.deepEqual(lines, []);
  });

  it('the exit write, made while a background write is in flight, is the one left on disk', async () => {
    const { file, doc } = setup();
    const s = new StatsFile(file, () => ({ ...doc }), createLogger('error', 'test', { sink: () => {} }));
    for (let i = 0; i < 20; i++) {
      doc.n = 2 * i + 1;
      s.writeSoon();
      doc.n = 2 * i + 2;
      await s.writeNow();
      await settle();
      assert.equal(read(file).n, 2 * i + 2, `round ${i}: the exit's counters, not the older background ones`);
    }
  });

  it('a file it cannot write: warned once, then at debug', async () => {
    const { dir, lines } = setup();
    const s = new StatsFile(join(dir, 'gone', 'stats.json'), () => ({}), createLogger('debug', 'test', { sink: (l) => lines.push(l) }));
    s.writeSoon();
    await settle();
    await s.writeNow();
    const said = lines.filter((l) => l.includes('cannot write the stats file'));
    assert.deepEqual(
      said.map((l) => (JSON.parse(l) as { level: string }).level),
      ['warn', 'debug'],
    );
  });
});
