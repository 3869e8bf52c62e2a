// TunWriter with offloads: packets whose virtio_net_hdr fails the check are
// dropped and counted, the rest of the batch is written in order, alongside
// what the kernel itself refuses and what waits for EAGAIN.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BAD_VNET_HDR, TunWriter } from '../../src/core/tun-writer.js';
import { createLogger } from '../../src/log.js';
import { EAGAIN, type PacketBatch, type TunDevice } from '../../src/tun/device.js';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM } from '../../src/tun/vnet-hdr.js';
import { numbered, packetNumber } from '../helpers/packets.js';

const EINVAL = 22;

/** A device that records each write() call; `refuse` says which packets the kernel would refuse. */
class RecordingTun implements TunDevice {
  readonly name = 'rec0';
  lastErrno = 0;
  readonly calls: Array<readonly Buffer[]> = [];
  readonly written: Buffer[] = [];
  eagainWrites = 0;
  private writable: (() => void) | undefined;

  constructor(
    readonly vnetHdrBytes: number,
    private readonly refuse: (p: Buffer) => boolean = () => false,
  ) {}

  start(_onBatch: (b: PacketBatch) => void): void {}

  write(packets: readonly Buffer[], start: number): number {
    this.calls.push(packets);
    if (this.eagainWrites > 0) {
      this.eagainWrites--;
      this.lastErrno = EAGAIN;
      return start;
    }
    for (let i = start; i < packets.length; i++) {
      const p = packets[i] as Buffer;
      if (this.refuse(p)) {
        this.lastErrno = EINVAL;
        return i;
      }
      this.written.push(p);
    }
    this.lastErrno = 0;
    return packets.length;
  }

  waitWritable(cb: () => void): void {
    this.writable = cb;
  }

  becomeWritable(): void {
    const cb = this.writable;
    this.writable = undefined;
    cb?.();
  }

  close(): void {}
}

/** Numbered IPv4/UDP packet with a virtio_net_hdr asking for the UDP checksum. */
function good(n: number): Buffer {
  const ip = numbered(n);
  const p = Buffer.alloc(10 + ip.length);
  p[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  p.writeUInt16LE(20, 6);
  p.writeUInt16LE(6, 8);
  ip.copy(p, 10);
  return p;
}

/** The same with legacy UFO as gso_type, which no kernel hands a TUN reader. */
function bad(n: number): Buffer {
  const p = good(n);
  p[1] = 3;
  p.writeUInt16LE(100, 4);
  return p;
}

const numbers = (ps: readonly Buffer[], o = 10): number[] => ps.map((p) => packetNumber(p.subarray(o)));
const quiet = createLogger('error', 'test', { sink: () => {} });

describe('TunWriter', () => {
  it('drops a packet with a bad virtio_net_hdr, counts it, and writes the others in order', () => {
    const tun = new RecordingTun(10);
    const w = new TunWriter(tun, 1 << 20, quiet);
    w.write([good(1), bad(2), good(3), bad(4), bad(5), good(6)]);
    assert.deepEqual(numbers(tun.written), [1, 3, 6]);
    assert.equal(w.stats.packets, 3);
    assert.equal(w.stats.bytes, 3 * good(1).length);
    assert.deepEqual(w.stats.refused, { [BAD_VNET_HDR]: 3 });
  });

  it('hands a clean batch to the device as it is, without a copy', () => {
    const tun = new RecordingTun(10);
    const w = new TunWriter(tun, 1 << 20, quiet);
    const batch = [good(1), good(2), good(3)];
    w.write(batch);
    assert.equal(tun.calls.length, 1);
    assert.equal(tun.calls[0], batch);
    assert.deepEqual(w.stats.refused, {});
  });

  it('a batch of nothing but bad headers writes nothing and counts them all', () => {
    const tun = new RecordingTun(10);
    const w = new TunWriter(tun, 1 << 20, quiet);
    w.write([bad(1), Buffer.alloc(3), Buffer.alloc(0)]);
    assert.equal(tun.written.length, 0);
    assert.equal(w.stats.packets, 0);
    assert.deepEqual(w.stats.refused, { [BAD_VNET_HDR]: 3 });
  });

  it('counts what the kernel refuses apart from bad headers, and goes on with the batch', () => {
    const tun = new RecordingTun(10, (p) => packetNumber(p.subarray(10)) === 3);
    const w = new TunWriter(tun, 1 << 20, quiet);
    w.write([good(1), bad(2), good(3), good(4)]);
    assert.deepEqual(numbers(tun.written), [1, 4]);
    assert.deepEqual(w.stats.refused, { [BAD_VNET_HDR]: 1, [`errno_${EINVAL}`]: 1 });
  });

  it('bad headers never reach the backlog: after EAGAIN only the good packets are written', () => {
    const tun = new RecordingTun(10);
    tun.eagainWrites = 1;
    const w = new TunWriter(tun, 1 << 20, quiet);
    w.write([good(1), bad(2), good(3)]);
    w.write([bad(4), good(5)]); // arrives while waiting: straight to the backlog
    assert.equal(tun.written.length, 0);
    tun.becomeWritable();
    assert.deepEqual(numbers(tun.written), [1, 3, 5]);
    assert.deepEqual(w.stats.refused, { [BAD_VNET_HDR]: 2 });
  });

  it('says when a backlog starts and when it is written out (the native receive path holds back meanwhile)', () => {
    const tun = new RecordingTun(0);
    tun.eagainWrites = 2;
    const w = new TunWriter(tun, 1 << 20, quiet);
    const told: boolean[] = [];
    w.onWaiting = (waiting) => told.push(waiting);
    w.write([numbered(1)]);
    assert.deepEqual(told, [true]);
    assert.equal(w.isWaiting, true);
    w.write([numbered(2)]);
    tun.becomeWritable(); // EAGAIN again: still waiting, not told it is over
    assert.equal(w.isWaiting, true);
    assert.ok(!told.includes(false));
    tun.becomeWritable();
    assert.deepEqual(told.at(-1), false);
    assert.equal(w.isWaiting, false);
    assert.deepEqual(numbers(tun.written, 0), [1, 2]);
  });

  it('what waits in the backlog is a copy: the buffer a packet came in (a link read buffer) may be overwritten', () => {
    const tun = new RecordingTun(0);
    tun.eagainWrites = 1;
    const w = new TunWriter(tun, 1 << 20, quiet);
    const read = Buffer.concat([numbered(1), numbered(2)]);
    const half = read.length / 2;
    w.write([read.subarray(0, half), read.subarray(half)]);
    read.fill(0xee); // the next read
    tun.becomeWritable();
    assert.deepEqual(numbers(tun.written, 0), [1, 2]);
  });

  it('without offloads there is no virtio_net_hdr to check: packets go as they are', () => {
    const tun = new RecordingTun(0);
    const w = new TunWriter(tun, 1 << 20, quiet);
    const batch = [numbered(1), Buffer.from('not a packet at all')];
    w.write(batch);
    assert.equal(tun.calls[0], batch);
    assert.equal(w.stats.packets, 2);
    assert.deepEqual(w.stats.refused, {});
  });
});
