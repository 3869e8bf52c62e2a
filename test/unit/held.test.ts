import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HeldPackets, HOLD_MAX_AGE_MS, HOLD_MAX_BYTES, HOLD_MAX_PACKETS, HOLD_MAX_TOTAL_BYTES, HoldBudget } from '../../src/core/held.js';

const packet = (n: number, size = 100): Buffer => Buffer.alloc(size, n & 0xff);

describe('packets held while no link is up', () => {
  it('keeps copies, oldest first, and hands them all over once', () => {
    const budget = new HoldBudget();
    const h = new HeldPackets(budget);
    const src = packet(1);
    assert.equal(h.hold(src, 0), 0);
    assert.equal(h.hold(packet(2), 1), 0);
    src.fill(9); // the TUN reuses its arena: the held packet is a copy
    assert.equal(budget.bytes, 200);
    const out = h.take();
    assert.deepEqual(out.map((p) => p[0]), [1, 2]);
    assert.equal(h.count, 0);
    assert.equal(budget.bytes, 0);
    assert.deepEqual(h.take(), []);
  });

  it('hands its packets over as one TUN batch, each behind the headroom a DATA header needs', () => {
    const h = new HeldPackets(new HoldBudget());
    assert.equal(h.takeBatch(4), undefined, 'nothing held, no batch');
    h.hold(packet(1, 3), 0);
    h.hold(packet(2, 5), 0);
    const b = h.takeBatch(4);
    assert.deepEqual([...(b?.lengths ?? [])], [3, 5]);
    assert.equal(b?.count, 2);
    assert.equal(b?.headroom, 4);
    assert.deepEqual([...(b?.arena ?? [])], [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 2, 2, 2, 2, 2]);
    assert.equal(h.count, 0);
  });

  it('drops the oldest past its count and its bytes, and counts them', () => {
    const h = new HeldPackets(new HoldBudget());
    let dropped = 0;
    for (let i = 0; i < HOLD_MAX_PACKETS + 10; i++) dropped += h.hold(packet(i), 0);
    assert.equal(dropped, 10);
    assert.equal(h.count, HOLD_MAX_PACKETS);
    assert.equal(h.take()[0]?.[0], 10, 'the ten oldest went');
    const big = HOLD_MAX_BYTES / 4;
    for (let i = 0; i < 4; i++) assert.equal(h.hold(packet(i, big), 0), 0);
    assert.equal(h.hold(packet(4, big), 0), 1, 'a fifth quarter pushes the oldest out');
    assert.deepEqual(h.take().map((p) => p[0]), [1, 2, 3, 4]);
    assert.equal(h.hold(packet(0, HOLD_MAX_BYTES + 1), 0), 1, 'a packet larger than the bound is not kept');
    assert.equal(h.count, 0);
  });

  it('drops what waited longer than its age, whenever it is asked', () => {
    const h = new HeldPackets(new HoldBudget());
    h.hold(packet(1), 0);
    h.hold(packet(2), 1000);
    assert.equal(h.expire(HOLD_MAX_AGE_MS), 0);
    assert.equal(h.expire(HOLD_MAX_AGE_MS + 1), 1);
    assert.equal(h.hold(packet(3), HOLD_MAX_AGE_MS + 1001), 1, 'holding expires too');
    assert.deepEqual(h.take().map((p) => p[0]), [3]);
  });

  it('keeps every session of a tunnel within one budget', () => {
    const budget = new HoldBudget();
    const size = HOLD_MAX_BYTES / 2;
    const sessions = Array.from({ length: (2 * HOLD_MAX_TOTAL_BYTES) / HOLD_MAX_BYTES }, () => new HeldPackets(budget));
    let dropped = 0;
    for (const h of sessions) for (let i = 0; i < 2; i++) dropped += h.hold(packet(i, size), 0);
    assert.equal(budget.bytes, HOLD_MAX_TOTAL_BYTES);
    assert.equal(dropped, sessions.length, 'half the sessions found the budget spent');
    for (const h of sessions) h.take();
    assert.equal(budget.bytes, 0);
  });
});
