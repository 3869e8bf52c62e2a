// Drives one open-mode session of the real tunnel core on a real TUN, with two
// links over loopback TCP, through a byte stream a test writes as a peer
// would (and as a careless or hostile one might): copies on both links (the
// lagging link's dropped unread), a frame cut across reads, control frames between data, a spoofed source, a
// virtio_net_hdr no kernel writes, a late copy, a frame too long for the
// limit, then frames that reads end inside of: a frame longer than a read, one
// whose peer closes half-way, one whose peer resets the connection half-way,
// one trickling in for three dead intervals, copies another link delivered
// dropped unread (one the only sign of life of its link), a frame limit lowered
// and one raised on links already read natively. Prints one JSON line: what
// reached a UDP socket behind the TUN, in order, and the counters. Run as root
// inside a network namespace (test/e2e/native-path.test.ts runs it with
// DPTCP_NATIVE_PATH=0 and without, and compares).
//   node --import tsx test/helpers/native-path-probe.ts offload|plain
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEFAULT_TIMING } from '../../src/config/types.js';
import { Link } from '../../src/core/link.js';
import { Tunnel, type LinkSnapshot } from '../../src/core/tunnel.js';
import { createLogger } from '../../src/log.js';
import { CloseCode, DATA_HEADER_BYTES, encodeData, encodeToken, FrameType } from '../../src/protocol/frame.js';
import { NativeTunDevice } from '../../src/tun/native-device.js';
import { socketPair } from './loopback.js';
import { ipv4EchoRequest, ipv4Udp } from './packets.js';

const offload = process.argv[2] === 'offload';
execFileSync('ip', ['link', 'set', 'lo', 'up']);
const quiet = createLogger('error', 'probe', { sink: () => {} });

const tun = NativeTunDevice.open({ name: 'dpf0', mtu: 1400, addresses: [{ address: '10.9.0.1', prefix: 24 }], batchPackets: 8, headroom: 32, offload });
const t = new Tunnel(tun, DEFAULT_TIMING, quiet);
t.start();
const s = t.newSession(Buffer.alloc(16, 7), Buffer.alloc(8, 1), [{ family: 4, address: '10.9.0.2', prefix: 32 }]);
s.mode = 'duplicate';
s.allowSources([{ family: 4, address: '10.9.0.2', prefix: 32 }], tun.vnetHdrBytes);
t.register(s);

const rx = createSocket('udp4');
const received: string[] = [];
// A long datagram as its tag and length ("p19:65000").
rx.on('message', (m) => received.push(m.length > 100 ? `${m.subarray(0, 3).toString()}:${m.length}` : m.toString()));
await new Promise<void>((r) => rx.bind(7777, '10.9.0.1', () => r()));

/** Packet `n` (its payload says n, then `pad` bytes) from `src`, as the peer's TUN would have read it. */
function packet(n: number, src = '10.9.0.2', vnetFlags = 0, pad = 0): Buffer {
  const p = ipv4Udp(src, '10.9.0.1', Buffer.concat([Buffer.from(`p${n}`), Buffer.alloc(pad, 0x61)]));
  p.writeUInt16BE(7777, 22);
  p.writeUInt16BE(0, 26); // no UDP checksum (allowed for IPv4)
  if (!offload) return p;
  const h = Buffer.alloc(10);
  h[0] = vnetFlags;
  return Buffer.concat([h, p]);
}
const data = (seq: number, n = seq, src?: string, vnetFlags?: number): Buffer => encodeData(seq, packet(n, src, vnetFlags));

/** A link of the session over a loopback connection; returns the peer's end. */
async function link(id: number, deadIntervalMs = 1e7, maxFrameBytes = 66_000): Promise<{ peer: Socket; link: Link }> {
  const { server, a: peer, b: sock } = await socketPair();
  server.close();
  const l = new Link(
    sock,
    { id, name: `l${id}`, maxFrameBytes, queueMaxBytes: 1 << 20, queueMaxAgeMs: 1000, keepaliveIntervalMs: Math.min(1e6, deadIntervalMs / 4), deadIntervalMs },
    { onFrame() {}, onChunkEnd() {}, onClose() {} },
    quiet,
  );
  s.attach(l);
  return { peer, link: l };
}

/** Link `id`'s frames taken by the native path so far (folded by the snapshot). */
function nativeFrames(id: number): number {
  return t.snapshot().sessions[0]?.links.find((l) => l.id === id)?.nativeFrames ?? 0;
}

const a = await link(0);
const b = await link(1);
/** Writes `bytes` on `peer` and lets the tunnel read them before the next write. */
async function send(peer: Socket, ...frames: Buffer[]): Promise<void> {
  peer.write(Buffer.concat(frames));
  await sleep(30);
}

await send(a.peer, data(1), data(2), data(3));
await send(b.peer, data(1), data(2), data(3), data(4));
const four = data(5);
await send(a.peer, data(4), four.subarray(0, 9));
await send(a.peer, four.subarray(9), encodeToken(FrameType.Ping, 1), data(6));
await send(b.peer, data(5), data(6), data(7, 7, '10.9.0.3'), data(8));
await send(a.peer, data(7, 7, '10.9.0.3'), data(8), data(9, 9, undefined, offload ? 4 : 0), data(10));
await send(b.peer, data(9, 9, undefined, offload ? 4 : 0), data(10), data(2), data(11));
// Link b's copy of 26 comes second, and the read of its copy of 27 ends inside it: the rest of
// that copy, which link a delivered already, is dropped in the kernel unread (droppedUnread);
// the first frame not delivered yet is read as usual. (Short copies are read as usual.)
const long27 = encodeData(27, packet(27, '10.9.0.2', 0, 30_000));
await send(a.peer, data(26), long27);
await send(b.peer, data(26));
await send(b.peer, long27.subarray(0, 10_000));
await send(b.peer, long27.subarray(10_000), data(28));
// A frame longer than the limit: link b closes; link a carries on.
const tooLong = Buffer.alloc(4);
tooLong.writeUInt32BE(70_000);
await send(b.peer, data(12), tooLong);
await send(a.peer, data(12), data(13));
// A read that ends inside a frame (as a busy link's do): the decoder finishes it, and the
// whole frames after it go the native way again.
const fourteen = data(14);
await send(a.peer, fourteen.subarray(0, 20));
await send(a.peer, fourteen.subarray(20), data(15), data(16));
// Any source from now on (as a client takes them): a packet the TUN refuses (IP version 5:
// EINVAL) is counted by the TUN writer, and the frames after it still arrive.
s.allowSources(undefined, tun.vnetHdrBytes);
const refused = data(17);
refused[DATA_HEADER_BYTES + tun.vnetHdrBytes] = 0x55;
await send(a.peer, refused, data(18));
// A read that ends 3 bytes into a frame (its length, not its type yet): the decoder's.
const nineteen = data(19);
await send(a.peer, nineteen.subarray(0, 3));
await send(a.peer, nineteen.subarray(3));
// A frame longer than a read (the read buffer is 64 KiB; this one is 65,024 bytes of datagram,
// over 65 KiB with the headers), in three parts: the reader holds it until it is whole, and it
// goes the native way (the counters below say so), on link a and, a copy, on link b's
// replacement; then a long frame whose sender stops half-way and closes: the decoder judges it.
const nativeBefore = nativeFrames(0);
const long = encodeData(20, packet(20, '10.9.0.2', 0, 65_021));
await send(a.peer, long.subarray(0, 30_000));
await send(a.peer, long.subarray(30_000, 60_000));
await send(a.peer, long.subarray(60_000));
const longNative = nativeFrames(0) - nativeBefore;
await send(a.peer, data(21));
const c = await link(2);
await send(c.peer, long.subarray(0, 40_000));
await send(c.peer, long.subarray(40_000), data(21));
const cut = encodeData(22, packet(22, '10.9.0.2', 0, 50_000));
await send(c.peer, cut.subarray(0, 20_000));
await send(c.peer, cut.subarray(20_000, 40_000));
c.peer.end();
// A long frame whose sender resets the connection half-way (RST, not FIN): the read fails
// while the reader holds the frame's start; the decoder gets those bytes first, as it would
// have, and the link closes for the reset.
const e = await link(3);
const reset = encodeData(24, packet(24, '10.9.0.2', 0, 50_000));
await send(e.peer, reset.subarray(0, 30_000));
await send(e.peer, reset.subarray(30_000, 45_000));
e.peer.resetAndDestroy();
await sleep(100);
// An echo request to the TUN's own address: the host answers during the TUN write, and the
// answer goes back on the links (the native path reads it right after the write: readsAfterWrite).
const replies: Buffer[] = [];
a.peer.on('data', (b: Buffer) => replies.push(b));
const echoPacket = ipv4EchoRequest('10.9.0.2', '10.9.0.1', Buffer.from('echo-probe'));
await send(a.peer, encodeData(25, offload ? Buffer.concat([Buffer.alloc(10), echoPacket]) : echoPacket));
await sleep(50);
const echoReplied = Buffer.concat(replies).includes('echo-probe');
// A long frame that trickles in for three times the link's dead interval, a piece every 100 ms:
// every piece is a sign of life, the link stays up and the frame arrives.
const d = await link(4, 300);
d.peer.on('data', () => {}); // its PINGs, unanswered
const slow = encodeData(23, packet(23, '10.9.0.2', 0, 40_000));
for (let off = 0; off < slow.length; off += 4_500) {
  d.peer.write(slow.subarray(off, off + 4_500));
  await sleep(100);
}
await sleep(200);
// Link d holds the start of a long frame (its read ended inside it) when link a delivers the
// frame: the rest of d's copy is dropped in the kernel unread; the next frame d reads as usual.
// Then a read of d's that ends inside a frame link a delivered already: dropped the same way.
const long29 = encodeData(29, packet(29, '10.9.0.2', 0, 30_000));
await send(d.peer, long29.subarray(0, 10_000));
await send(a.peer, long29);
await send(d.peer, long29.subarray(10_000), data(30));
const long31 = encodeData(31, packet(31, '10.9.0.2', 0, 30_000));
await send(a.peer, data(30), long31);
await send(d.peer, data(32), long31.subarray(0, 10_000));
await send(d.peer, long31.subarray(10_000));
await send(a.peer, data(32));
// Link d reads a whole long copy link a delivered (it lags), then peeks at the next frame's
// header: a long copy delivered already, dropped unread; the short one after it read as usual.
const long33 = encodeData(33, packet(33, '10.9.0.2', 0, 20_000));
const long34 = encodeData(34, packet(34, '10.9.0.2', 0, 20_000));
await send(a.peer, long33, long34);
await send(d.peer, long33);
await send(d.peer, long34, data(35));
await send(a.peer, data(35));
const linkStats = (l: LinkSnapshot) => ({
  state: l.state,
  rxFrames: l.rxFrames,
  rxBytes: l.rxBytes,
  firstCopies: l.firstCopies,
  duplicates: l.duplicates,
  stale: l.stale,
  nativeFrames: l.nativeFrames,
  droppedUnread: l.droppedUnread,
});
// The links as they are now: the unanswered PINGs of link d (dead interval 300 ms) end it
// during what follows.
const snap = t.snapshot();
const session = snap.sessions[0];
// A new link (dead interval 600 ms) is silent for 350 ms, then its first read ends inside a
// long copy link a delivered: the rest is dropped unread, a piece every 450 ms. The piece whose
// read ended inside the copy is a sign of life too, or 800 ms would pass unheard.
const f = await link(5, 600);
f.peer.on('data', () => {}); // its PINGs, unanswered
const long36 = encodeData(36, packet(36, '10.9.0.2', 0, 30_000));
await send(a.peer, long36);
await sleep(320);
for (let off = 0; off < long36.length; off += 10_500) {
  f.peer.write(long36.subarray(off, off + 10_500));
  await sleep(450);
}
const lastLink = t.snapshot().sessions[0]?.links.find((l) => l.id === 5);
// The frame limit changed on links the native path reads (Link.setMaxFrameBytes): it refuses
// what the decoder refuses. Lowered to 1,024 bytes, a frame of 2 KiB closes the link and is not
// delivered; raised from 1,024 (as a server's links start, at the handshake's limit), it arrives.
const lowered = await link(6);
lowered.link.setMaxFrameBytes(1024);
await send(lowered.peer, encodeData(40, packet(40, '10.9.0.2', 0, 2_000)));
const raised = await link(7, 1e7, 1024);
raised.link.setMaxFrameBytes(66_000);
await send(raised.peer, encodeData(41, packet(41, '10.9.0.2', 0, 2_000)));
const limits = t.snapshot().sessions[0]?.links.filter((l) => l.id === 6 || l.id === 7);
const out = {
  longNative,
  echoReplied,
  readsAfterWrite: tun.native?.readsAfterWrite ?? 0,
  vnetHdrBytes: tun.vnetHdrBytes,
  received,
  delivered: session?.rxPackets,
  spoofed: session?.dropsSpoofed,
  elimination: session?.elimination,
  written: snap.tun.written,
  links: session?.links.map(linkStats),
  lastLink: lastLink && linkStats(lastLink),
  limits: limits?.map(linkStats),
};
s.close(CloseCode.Shutdown, 'probe done');
a.peer.destroy();
b.peer.destroy();
rx.close();
t.close();
tun.close();
process.stdout.write(JSON.stringify(out) + '\n');
process.exit(0);
