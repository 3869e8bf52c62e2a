// One load-generator process of `npm run bench:clients` (scripts/bench-clients.ts),
// run inside a network namespace of its own. It hosts many dp-tcp clients:
// each is the project's own client core — a ClientRole on a Tunnel, with its
// own key, session id, source address per link and tunnel address — on an
// in-memory TUN device instead of a kernel one (a process has one TUN, and a
// hundred `dp-tcp client` processes would mostly measure Node start-up on two
// cores). Everything on the wire is the real protocol: Noise handshakes,
// sealed records, keepalives, redials.
//
// Driven by JSON lines on stdin; answers with JSON lines on stdout:
//   in:  {"job": Job}          -> out: {"ev":"ready"}  (clients built, not started)
//   in:  {"go": true}          -> out: {"ev":"up","c":N} once client N has every link up
//   in:  {"traffic": seconds}  -> out: {"ev":"sent", ...totals}  (every client sends as fast as its links take)
//   in:  {"stop": true}        -> closes everything and exits
import { createInterface } from 'node:readline';
import { DEFAULT_TIMING, type ClientConfig } from '../src/config/types.js';
import { Tunnel } from '../src/core/tunnel.js';
import { createLogger } from '../src/log.js';
import { DATA_HEADER_BYTES } from '../src/protocol/frame.js';
import { ClientRole } from '../src/roles/client.js';
import type { PacketBatch, TunDevice } from '../src/tun/device.js';
import { VNET_HDR_BYTES } from '../src/tun/vnet-hdr.js';

export interface WorkerClient {
  /** Client number (1-based), for names and reports. */
  readonly c: number;
  /** X25519 private key, base64. */
  readonly key: string;
  /** Tunnel address (IPv4) and prefix length. */
  readonly tun: string;
  readonly prefix: number;
  /** Source address of each link. */
  readonly locals: readonly string[];
}

export interface WorkerJob {
  readonly serverPublicKey: string;
  /** Where each link dials: the server's listen address and port. */
  readonly remotes: ReadonlyArray<{ address: string; port: number }>;
  /** The server's tunnel address: destination of the generated traffic. */
  readonly serverTun: string;
  readonly clients: readonly WorkerClient[];
  /** IP packet size of the generated UDP datagrams. */
  readonly packetBytes: number;
  /** Packets per TUN batch (one read of a real TUN). */
  readonly batchPackets: number;
}

/** An in-memory TUN with offloads on (a virtio_net_hdr before every packet), as the server's default. */
class MemoryTun implements TunDevice {
  readonly vnetHdrBytes = VNET_HDR_BYTES;
  readonly lastErrno = 0;
  /** Packets the tunnel delivered (from the server). */
  written = 0;
  private onBatch: ((b: PacketBatch) => void) | undefined;

  constructor(readonly name: string) {}

  start(onBatch: (b: PacketBatch) => void): void {
    this.onBatch = onBatch;
  }

  /** One batch, laid out as the native reader leaves it (headroom before each packet). */
  inject(batch: PacketBatch): void {
    this.onBatch?.(batch);
  }

  write(packets: readonly Buffer[], start: number): number {
    this.written += packets.length - start;
    return packets.length;
  }

  waitWritable(cb: () => void): void {
    setImmediate(cb);
  }

  close(): void {
    this.onBatch = undefined;
  }
}

function ipv4Checksum(h: Buffer, off: number): number {
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += h.readUInt16BE(off + i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/**
 * A TUN batch of `count` UDP datagrams from `src` to `dst`:9 (discard), each
 * `size` bytes of IP packet behind a zero virtio_net_hdr (no GSO, checksum
 * done), with DATA_HEADER_BYTES of headroom before each, as the native reader
 * leaves them. The tunnel writes its DATA headers into the headroom; the
 * packets themselves are never modified, so the batch is reused.
 */
function makeBatch(src: string, dst: string, size: number, count: number): PacketBatch {
  const len = VNET_HDR_BYTES + size;
  const stride = DATA_HEADER_BYTES + len;
  const arena = Buffer.alloc(stride * count);
  const lengths = new Uint32Array(count);
  for (let i = 0; i < count; i++) {
    const p = i * stride + DATA_HEADER_BYTES + VNET_HDR_BYTES;
    arena[p] = 0x45;
    arena.writeUInt16BE(size, p + 2);
    arena.writeUInt16BE(i, p + 4);
    arena[p + 8] = 64;
    arena[p + 9] = 17;
    Buffer.from(src.split('.').map(Number)).copy(arena, p + 12);
    Buffer.from(dst.split('.').map(Number)).copy(arena, p + 16);
    arena.writeUInt16BE(ipv4Checksum(arena, p), p + 10);
    arena.writeUInt16BE(40000, p + 20);
    arena.writeUInt16BE(9, p + 22);
    arena.writeUInt16BE(size - 20, p + 24); // UDP length; checksum 0: none (IPv4)
    lengths[i] = len;
  }
  return { arena, lengths, count, headroom: DATA_HEADER_BYTES };
}

interface Hosted {
  readonly c: number;
  readonly tun: MemoryTun;
  readonly tunnel: Tunnel;
  readonly role: ClientRole;
  readonly batch: PacketBatch;
  up: boolean;
  injected: number;
}

/** The kernel send buffer a link may hold before this client waits (as a TUN reader blocked by a full socket). */
const SOCKET_BACKLOG_BYTES = 64 * 1024;

function send(line: object): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

let hosted: Hosted[] = [];
let linkCount = 0;

function build(job: WorkerJob): void {
  const log = createLogger('warn', `gen${process.pid}`, { format: 'json' });
  linkCount = job.remotes.length;
  hosted = job.clients.map((cl) => {
    const config: ClientConfig = {
      role: 'client',
      file: 'bench-clients',
      logLevel: 'warn',
      nice: 0,
      statusListen: undefined,
      routes: [],
      mode: 'duplicate',
      timing: { ...DEFAULT_TIMING, statsIntervalMs: 0 },
      security: {
        mode: 'keys',
        privateKey: Buffer.from(cl.key, 'base64'),
        psk: undefined,
        encryption: 'chacha20-poly1305',
        serverPublicKey: Buffer.from(job.serverPublicKey, 'base64'),
        peers: [],
      },
      tunnel: { name: `bench${cl.c}`, mtu: 1400, offload: true, addresses: [{ family: 4, address: cl.tun, prefix: cl.prefix }] },
      links: job.remotes.map((r, i) => ({
        id: i,
        name: `wan${i + 1}`,
        remoteAddress: r.address,
        remotePort: r.port,
        localAddress: cl.locals[i],
      })),
    };
    const tun = new MemoryTun(`bench${cl.c}`);
    const clog = log.child(`c${cl.c}`);
    const tunnel = new Tunnel(tun, config.timing, clog);
    const role = new ClientRole(config, tunnel, clog);
    return { c: cl.c, tun, tunnel, role, batch: makeBatch(cl.tun, job.serverTun, job.packetBytes, job.batchPackets), up: false, injected: 0 };
  });
  send({ ev: 'ready', clients: hosted.length });
}

function go(): void {
  for (const h of hosted) {
    h.role.start();
    h.tunnel.start();
  }
  const watch = setInterval(() => {
    let waiting = 0;
    for (const h of hosted) {
      if (h.up) continue;
      if (h.role.session.upLinks().length === linkCount) {
        h.up = true;
        send({ ev: 'up', c: h.c });
      } else waiting++;
    }
    if (waiting === 0) clearInterval(watch);
  }, 5);
}

/** May this client hand the tunnel another batch now? Every up link has room in its socket, and nothing queued. */
function ready(h: Hosted): boolean {
  const links = h.role.session.upLinks();
  if (links.length === 0) return false;
  for (const l of links) if (l.queueBytes > 0 || l.socket.writableLength > SOCKET_BACKLOG_BYTES) return false;
  return true;
}

function traffic(seconds: number): void {
  const end = performance.now() + seconds * 1000;
  let next = 0;
  // The longest this process's event loop went without running a timer: a long one starves the links' keepalives.
  let lagMaxMs = 0;
  let last = performance.now();
  const lag = setInterval(() => {
    const now = performance.now();
    lagMaxMs = Math.max(lagMaxMs, now - last - 20);
    last = now;
  }, 20);
  const pump = (): void => {
    if (performance.now() >= end) {
      finish();
      return;
    }
    // Round robin, one batch per client per pass; a pass yields to I/O before the next.
    let sent = 0;
    for (let k = 0; k < hosted.length; k++) {
      const h = hosted[(next + k) % hosted.length] as Hosted;
      if (!ready(h)) continue;
      h.tun.inject(h.batch);
      h.injected += h.batch.count;
      sent++;
    }
    next = (next + 1) % Math.max(1, hosted.length);
    if (sent > 0) setImmediate(pump);
    else setTimeout(pump, 1);
  };
  pump();
  const finish = (): void => {
    let queueFull = 0;
    let queueAge = 0;
    let noLink = 0;
    let noKey = 0;
    for (const h of hosted) {
      const s = h.role.session;
      noLink += s.stats.dropsNoLink;
      noKey += s.stats.dropsNoKey;
      for (const { stats } of s.linkStats.values()) {
        queueFull += stats.drops.queue_full;
        queueAge += stats.drops.queue_age;
      }
    }
    clearInterval(lag);
    const injected = hosted.map((h) => h.injected);
    send({ ev: 'sent', injected, lagMaxMs: Math.round(lagMaxMs), drops: { queueFull, queueAge, noLink, noKey }, received: hosted.reduce((a, h) => a + h.tun.written, 0) });
  };
}

function stop(): void {
  for (const h of hosted) {
    h.role.close();
    h.tunnel.close();
  }
  setTimeout(() => process.exit(0), 300).unref();
}

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const m = JSON.parse(line) as { job?: WorkerJob; go?: boolean; traffic?: number; stop?: boolean };
  if (m.job) build(m.job);
  else if (m.go) go();
  else if (m.traffic !== undefined) traffic(m.traffic);
  else if (m.stop) stop();
});
rl.on('close', () => stop());
