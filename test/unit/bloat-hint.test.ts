// An unpaced link whose round trip stays far above its idle one is filling a
// buffer on its path: the log says to pace it, once per link name, and not
// for a paced link or a passing spike.
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { before, describe, it } from 'node:test';
import { BLOAT_HINT_SAMPLES, Link } from '../../src/core/link.js';
import { memoryLogger } from '../../src/log.js';
import { encodeToken, FRAME_HEADER_BYTES, FrameType } from '../../src/protocol/frame.js';
import { FakeSocket } from '../helpers/fake-socket.js';

function link(name: string): { link: Link; lines: string[] } {
  const log = memoryLogger('info');
  const l = new Link(
    new FakeSocket() as unknown as Socket,
    { id: 0, name, maxFrameBytes: 66_000, queueMaxBytes: 1 << 20, queueMaxAgeMs: 200, keepaliveIntervalMs: 1000, deadIntervalMs: 5000 },
    { onFrame: () => {}, onChunkEnd: () => {}, onClose: () => {} },
    log,
  );
  l.state = 'up';
  return { link: l, lines: log.lines };
}

/** A PONG whose PING left `ms` ago: a round-trip sample of `ms`. */
function pong(l: Link, ms: number): void {
  const frame = encodeToken(FrameType.Pong, Math.round((performance.now() - ms) * 1000));
  l.handleKeepalive(FrameType.Pong, frame, FRAME_HEADER_BYTES);
}

const hinted = (lines: string[]): number => lines.filter((x) => x.includes('pace the link')).length;

describe('the hint to pace a link with a standing queue on its path', () => {
  // A PONG carries the PING's send time (performance.now()): samples of 400 ms need a clock past that.
  before(() => new Promise((r) => setTimeout(r, Math.max(0, 1000 - performance.now()))));

  it('comes after round trips far above the idle one, once per link name', () => {
    const a = link('dsl');
    pong(a.link, 20);
    for (let i = 0; i < 3 * BLOAT_HINT_SAMPLES; i++) pong(a.link, 400);
    assert.equal(hinted(a.lines), 1);
    // The idle sample, 20 ms plus however late the test ran the PONG (3.5 ms on a busy CI machine): not the 400 ms ones.
    const idle = /link=dsl.*idle_rtt_ms=([\d.]+)/.exec(a.lines.find((x) => x.includes('pace the link')) as string);
    assert.ok(idle && Number(idle[1]) >= 20 && Number(idle[1]) < 100, `idle_rtt_ms: ${idle?.[1]}`);
    // The link's next connection (same name) says nothing again.
    const again = link('dsl');
    pong(again.link, 20);
    for (let i = 0; i < 3 * BLOAT_HINT_SAMPLES; i++) pong(again.link, 400);
    assert.equal(hinted(again.lines), 0);
  });

  it('not for a spike that passes, nor for a paced link', () => {
    const b = link('lte');
    pong(b.link, 20);
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < BLOAT_HINT_SAMPLES - 8; i++) pong(b.link, 400);
      for (let i = 0; i < 30; i++) pong(b.link, 20); // back to idle
    }
    assert.equal(hinted(b.lines), 0);
    const c = link('paced');
    c.link.paceKbit = 45_000;
    pong(c.link, 20);
    for (let i = 0; i < 3 * BLOAT_HINT_SAMPLES; i++) pong(c.link, 400);
    assert.equal(hinted(c.lines), 0);
  });
});
