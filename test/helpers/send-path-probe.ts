// Drives one open-mode session of the real tunnel core on a real TUN, with two
// links over loopback TCP whose peers this probe reads as a dp-tcp peer would,
// and sends UDP datagrams into the TUN: some to the session's address, some
// to an address no session holds; then, with one peer not reading, enough to
// fill its socket (sends that take part of a frame, or none, and a queue that
// overflows), before it reads again. Prints one JSON line: per link, the
// DATA frames its peer decoded (sequence number and payload), whether the
// stream stayed whole, and the counters. Run as root inside a network
// namespace (test/e2e/send-path.test.ts runs it with DPTCP_NATIVE_PATH=0 and
// without, and compares).
//   node --import tsx test/helpers/send-path-probe.ts offload|plain
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEFAULT_TIMING } from '../../src/config/types.js';
import { Link } from '../../src/core/link.js';
import { Tunnel } from '../../src/core/tunnel.js';
import { createLogger } from '../../src/log.js';
import { CloseCode, DATA_HEADER_BYTES, FrameDecoder, FrameType, readU64 } from '../../src/protocol/frame.js';
import { loadAddon } from '../../src/tun/loader.js';
import { NativeTunDevice } from '../../src/tun/native-device.js';
import { socketPair } from './loopback.js';

const fdOf = (sock: Socket): number => (sock as unknown as { _handle: { fd: number } })._handle.fd;

const offload = process.argv[2] === 'offload';
execFileSync('ip', ['link', 'set', 'lo', 'up']);
const quiet = createLogger('error', 'probe', { sink: () => {} });

const tun = NativeTunDevice.open({ name: 'dps0', mtu: 65_000, addresses: [{ address: '10.8.0.1', prefix: 24 }], batchPackets: 8, headroom: DATA_HEADER_BYTES, offload });
const t = new Tunnel(tun, DEFAULT_TIMING, quiet);
t.start();
const s = t.newSession(Buffer.alloc(16, 7), Buffer.alloc(8, 1), [{ family: 4, address: '10.8.0.2', prefix: 32 }]);
s.mode = 'duplicate';
t.register(s);

interface PeerView {
  frames: string[];
  broken: string | null;
  bytes: number;
  rests: number[];
  restBuffers: number;
}

/** A link of the session over a loopback connection; its peer decodes what arrives. */
async function link(id: number): Promise<{ peer: Socket; link: Link; view: PeerView }> {
  const { server, a: peer, b: sock } = await socketPair();
  server.close();
  const view: PeerView = { frames: [], broken: null, bytes: 0, rests: [], restBuffers: 0 };
  // The memory the frames handed back lie in: the addon copies them into the link's rest buffer, one for all.
  const restMemory = new Set<ArrayBufferLike>();
  const decoder = new FrameDecoder(66_000, (type, buf, start, end) => {
    if (type !== FrameType.Data) return;
    // `start`: the body, a sequence number and the packet; the UDP payload after its 20-byte IPv4 and 8-byte UDP headers.
    const ip = start + 8 + tun.vnetHdrBytes;
    view.frames.push(`${readU64(buf, start)}:${buf.subarray(ip + 28, end).toString().replace(/\.+$/, '')}`);
  });
  peer.on('data', (chunk: Buffer) => {
    view.bytes += chunk.length;
    if (view.broken !== null) return;
    try {
      decoder.push(chunk);
    } catch (e) {
      view.broken = (e as Error).message;
    }
  });
  const l = new Link(
    sock,
    { id, name: `l${id}`, maxFrameBytes: 66_000, queueMaxBytes: 256 * 1024, queueMaxAgeMs: 10_000, keepaliveIntervalMs: 1e6, deadIntervalMs: 1e7 },
    { onFrame() {}, onChunkEnd() {}, onClose() {} },
    quiet,
  );
  // A small send buffer: a peer that stops reading fills it with a few frames. (Not the peer's
  // receive buffer: shrunk on an open connection, its window closes for seconds of zero-window probes.)
  const addon = loadAddon();
  addon.setsockoptInt(fdOf(sock), addon.constants.SOL_SOCKET, addon.constants.SO_SNDBUF, 16 * 1024);
  s.attach(l);
  // Counts the frames the native path handed back part-sent or unsent (sendRest).
  const sendRest = l.sendRest.bind(l);
  l.sendRest = (frames, sent, packets, nowMs) => {
    view.rests.push(sent);
    restMemory.add(frames.buffer);
    view.restBuffers = restMemory.size;
    sendRest(frames, sent, packets, nowMs);
  };
  return { peer, link: l, view };
}

const a = await link(0);
const b = await link(1);
const udp = createSocket('udp4');
await new Promise<void>((r) => udp.bind(0, '10.8.0.1', () => r()));
/** Datagrams `from`..`to` to `dst` (payload `n` padded to `size`), `perTurn` per event-loop turn. */
async function burst(dst: string, from: number, to: number, size: number, perTurn: number): Promise<void> {
  for (let n = from; n < to; n++) {
    udp.send(Buffer.from(`u${n}`.padEnd(size, '.')), 9, dst);
    if ((n - from) % perTurn === perTurn - 1) await sleep(1);
  }
  await sleep(50);
}

// Both peers read: every datagram to 10.8.0.2 goes on both links, in order; those to 10.8.0.3 have no session.
await burst('10.8.0.2', 0, 300, 40, 5);
await burst('10.8.0.3', 300, 310, 40, 5);
await burst('10.8.0.2', 310, 400, 1000, 20);
// Peer b stops reading: its socket fills, sends take part of a frame or none, its queue overflows;
// again and again, with packets of other sizes (where the socket stops taking bytes falls elsewhere).
for (let round = 0; round < 8; round++) {
  const from = 400 + round * 1500;
  b.peer.pause();
  // Small packets, and large ones (the TUN's MTU is 65,000): a large frame is what a socket takes in part.
  if (round % 2 === 0) await burst('10.8.0.2', from, from + 1500, 300 + round * 137, 100);
  else await burst('10.8.0.2', from, from + 150, 15_000 + round * 2_999, 10);
  await sleep(100);
  b.peer.resume();
  await sleep(300);
}
await sleep(700);
// Both read again: what the native path sends now follows what the TypeScript path queued.
await burst('10.8.0.2', 12_400, 12_500, 40, 5);
await sleep(500);

const snap = t.snapshot();
const session = snap.sessions[0];
const views = [a.view, b.view];
const out = {
  vnetHdrBytes: tun.vnetHdrBytes,
  tun: { rxPackets: snap.tun.tunRxPackets, noSession: snap.tun.dropsNoSession },
  txPackets: session?.txPackets,
  links: session?.links.map((l, i) => ({
    state: l.state,
    txPackets: l.txPackets,
    txBytes: l.txBytes,
    drops: l.drops,
    nativeSentFrames: l.nativeSentFrames,
    broken: views[i] === undefined ? 'no view' : views[i].broken,
    peerBytes: views[i]?.bytes,
    rests: views[i]?.rests,
    restBuffers: views[i]?.restBuffers,
    frames: views[i]?.frames,
  })),
};
s.close(CloseCode.Shutdown, 'probe done');
a.peer.destroy();
b.peer.destroy();
udp.close();
t.close();
tun.close();
process.stdout.write(JSON.stringify(out) + '\n');
process.exit(0);
