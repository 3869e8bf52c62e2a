// Exercises the native TUN device directly; run as root inside a network
// namespace (test/e2e/native.test.ts does). Prints one JSON line of findings.
//   node --import tsx test/helpers/native-probe.ts io|offload|worker|pins|collect
import { execFileSync } from 'node:child_process';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import { createSocket } from 'node:dgram';
import { Worker, type WorkerOptions } from 'node:worker_threads';
import { NativeTunDevice } from '../../src/tun/native-device.js';
import type { PacketBatch } from '../../src/tun/device.js';
import { ipv4Udp } from './packets.js';

const mode = process.argv[2];
const has = (dev: string): boolean => execFileSync('ip', ['-o', 'link', 'show']).toString().includes(`: ${dev}:`);

function firstBatch(tun: NativeTunDevice): Promise<Buffer[]> {
  return new Promise((resolve) => {
    tun.start(
      (b: PacketBatch) => {
        const out: Buffer[] = [];
        let off = 0;
        for (let i = 0; i < b.count; i++) {
          const len = b.lengths[i] as number;
          out.push(Buffer.from(b.arena.subarray(off + b.headroom, off + b.headroom + len)));
          off += b.headroom + len;
        }
        resolve(out);
      },
      (e) => {
        throw e;
      },
    );
  });
}

async function io(offload: boolean): Promise<Record<string, unknown>> {
  const tun = NativeTunDevice.open({
    name: 'dpn0',
    mtu: 1400,
    addresses: [{ address: '10.9.0.1', prefix: 24 }],
    batchPackets: 8,
    headroom: 16,
    offload,
  });
  const got = firstBatch(tun);
  const tx = createSocket('udp4');
  tx.bind(0, '10.9.0.1', () => tx.send(Buffer.from('to the tunnel'), 9999, '10.9.0.2'));
  const packets = (await got).filter((p) => (p[tun.vnetHdrBytes] ?? 0) >> 4 === 4 && p[tun.vnetHdrBytes + 9] === 17);
  const read = packets[0];
  const o = tun.vnetHdrBytes;
  // And the other way: a packet written to the TUN reaches a local socket.
  const rx = createSocket('udp4');
  const delivered = new Promise<string>((r) => rx.on('message', (m) => r(m.toString())));
  await new Promise<void>((r) => rx.bind(7777, '10.9.0.1', () => r()));
  const pkt = ipv4Udp('10.9.0.2', '10.9.0.1', Buffer.from('from the tunnel'));
  pkt.writeUInt16BE(7777, 22);
  pkt.writeUInt16BE(0, 26); // no UDP checksum (allowed for IPv4)
  const written = tun.write([offload ? Buffer.concat([Buffer.alloc(10), pkt]) : pkt], 0);
  const text = await Promise.race([delivered, new Promise<string>((r) => setTimeout(() => r('(nothing)'), 2000))]);
  tx.close();
  rx.close();
  const existed = has('dpn0');
  tun.close();
  tun.close(); // idempotent
  return {
    vnetHdrBytes: o,
    readDst: read ? `${read[o + 16]}.${read[o + 17]}.${read[o + 18]}.${read[o + 19]}` : null,
    readPayload: read ? read.subarray(o + 28).toString() : null,
    written,
    delivered: text,
    existedWhileOpen: existed,
    goneAfterClose: !has('dpn0'),
  };
}

async function worker(): Promise<Record<string, unknown>> {
  const w = new Worker(
    // The compiled module: an eval'd worker does not go through the TypeScript loader.
    `const { NativeTunDevice } = await import(${JSON.stringify(new URL('../../dist/tun/native-device.js', import.meta.url).href)});
     const { parentPort } = await import('node:worker_threads');
     globalThis.tun = NativeTunDevice.open({ name: 'dpw0', mtu: 1400, addresses: [{ address: '10.9.1.1', prefix: 24 }], batchPackets: 4, headroom: 16, offload: false });
     globalThis.tun.start(() => {}, () => {});
     parentPort.postMessage('open');
     setInterval(() => {}, 1000);`,
    { eval: true, type: 'module' } as unknown as WorkerOptions,
  );
  await new Promise((r, j) => (w.once('message', r), w.once('error', j)));
  const existed = has('dpw0');
  await w.terminate(); // no close(): the addon's environment cleanup hook must do it
  await new Promise((r) => setTimeout(r, 100));
  return { existedInWorker: existed, goneAfterTerminate: !has('dpw0') };
}

/**
 * Pinned batches: their bytes stay while pinned (later batches land after
 * them in their arena, or in other arenas: more batches are kept than there
 * are arenas), a pin that would leave no room to read into is refused (all
 * eight arenas allocated), and a released arena is read into again, from its
 * start.
 */
async function pins(): Promise<Record<string, unknown>> {
  const tun = NativeTunDevice.open({ name: 'dpp0', mtu: 1400, addresses: [{ address: '10.9.2.1', prefix: 24 }], batchPackets: 4, headroom: 16, offload: false });
  type Kept = { view: Buffer; copy: Buffer; release: () => void };
  const kept: Kept[] = [];
  let batches = 0;
  let refusedWhenFull = false;
  let reusedAfterRelease = false;
  let released: Kept | undefined;
  /** Batches pinned, each, until a pin is refused (packed, eight arenas of this size hold a few dozen). */
  const FULL = 100;
  const later: Array<() => void> = [];
  const intact: boolean[] = [];
  const done = new Promise<void>((resolve) => {
    tun.start(
      (b: PacketBatch) => {
        batches++;
        let used = 0;
        for (let i = 0; i < b.count; i++) used += b.headroom + (b.lengths[i] as number);
        const view = b.arena.subarray(0, used);
        if (released !== undefined && view.buffer === released.view.buffer && view.byteOffset === released.view.byteOffset) reusedAfterRelease = true;
        // Pin every batch until a pin is refused (no room after it in its arena, and no free arena).
        if (batches < FULL && !refusedWhenFull) {
          const release = b.pin?.();
          if (release) kept.push({ view, copy: Buffer.from(view), release });
          else refusedWhenFull = true;
        }
        if (batches === FULL) {
          released = kept[0];
          for (const k of kept) intact.push(k.view.equals(k.copy));
          // Every batch kept in the first arena: it is free again.
          for (const k of kept) if (k.view.buffer === released?.view.buffer) k.release();
        }
        // Pinning the batches read from now on fills the rest of the arena being read into, then
        // moves reading to a free one: the one released above, from its start.
        if (batches > FULL && batches < FULL + 40) {
          const release = b.pin?.();
          if (release) later.push(release);
        }
        if (batches === FULL + 40) for (const release of later) release();
        if (batches >= FULL + 50) resolve();
      },
      (e) => {
        throw e;
      },
    );
  });
  const tx = createSocket('udp4');
  await new Promise<void>((r) => tx.bind(0, '10.9.2.1', () => r()));
  for (let i = 0; i < 2000 && batches < FULL + 50; i++) {
    await new Promise<void>((r) => tx.send(Buffer.alloc(200 + (i % 7) * 100, i & 0xff), 9999, '10.9.2.2', () => r()));
    if (i % 3 === 0) await new Promise((r) => setTimeout(r, 2));
  }
  await Promise.race([done, new Promise((r) => setTimeout(r, 8000))]);
  tx.close();

  const use = tun.arenaUse;
  tun.close();
  // Batches that share an arena: a pinned batch holds only its own bytes, the next is read after it.
  const packed = kept.some((k, i) => i > 0 && k.view.buffer === kept[i - 1]?.view.buffer && k.view.byteOffset > (kept[i - 1] as Kept).view.byteOffset);
  return {
    pinnedPastArenas: kept.length > 7,
    packed,
    intactWhilePinned: intact.every((x) => x) && intact.length === kept.length,
    refusedWhenFull,
    reusedAfterRelease,
    arenas: use.allocated,
    batches: batches >= FULL + 50,
  };
}

/** A closed device lets go of its callbacks (which hold it): it and its arenas can be collected. */
async function collect(): Promise<Record<string, unknown>> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const collected: string[] = [];
  const registry = new FinalizationRegistry<string>((what) => collected.push(what));
  (() => {
    const tun = NativeTunDevice.open({ name: 'dpn3', mtu: 1400, addresses: [{ address: '10.9.3.1', prefix: 24 }], batchPackets: 8, headroom: 16, offload: false });
    tun.start(
      () => {},
      () => {},
    );
    registry.register(tun, 'device');
    tun.close();
  })();
  for (let i = 0; i < 20 && collected.length === 0; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 20));
  }
  return { collected, gone: !has('dpn3') };
}

const result = mode === 'worker' ? await worker() : mode === 'pins' ? await pins() : mode === 'collect' ? await collect() : await io(mode === 'offload');
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(0);
