// The attacker as a command, for what must run inside a network namespace:
//   ip netns exec NS node --import tsx test/helpers/attack.ts COMMAND 'JSON'
// prints one JSON result on stdout (the relay: one JSON line per command it
// reads on stdin). Commands:
//   relay    on-path man in the middle (Relay in attacker.ts), driven over stdin
//   stranger connects without a key and sends forged frames, one case per connection
//   insider  a listed peer: real handshakes, then malformed sealed records
//   flood    many connections from many source addresses: idle, garbage, INITIATIONs
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { CLOSE_ANY_LINK, CloseCode, FRAME_HEADER_BYTES, FrameType } from '../../src/protocol/frame.js';
import type { LinkIntro } from '../../src/protocol/handshake.js';
import { Initiator, type Identity } from '../../src/secure/handshake.js';
import type { Keypair } from '../../src/secure/keypair.js';
import { REJECT_AFTER_MESSAGES } from '../../src/secure/limits.js';
import { sealRecord } from '../../src/secure/record.js';
import {
  clientIdentity,
  closeReason,
  frames,
  garbageSealed,
  handshake,
  linkIntro,
  nonceReuse,
  openSealed,
  rawFrame,
  RawConn,
  Relay,
  strangerIdentity,
  udpPacket,
  type Direction,
  type Frame,
  type RelayLinkSpec,
  type ReplayFilter,
} from './attacker.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const out = (v: unknown): void => void process.stdout.write(`${JSON.stringify(v)}\n`);
const key = (b64: string): Buffer => Buffer.from(b64, 'base64');

interface Target {
  host: string;
  port: number;
  local?: string;
}

// --------------------------------------------------------------------------- relay

interface RelayCommand {
  id: number;
  cmd: string;
  link?: number;
  dir?: Direction;
  on?: boolean;
  hex?: string;
  filter?: ReplayFilter;
  type?: number;
  count?: number;
  drop?: boolean;
  ns?: number[];
  waitMs?: number;
}

async function relay(spec: { links: RelayLinkSpec[] }): Promise<void> {
  const r = new Relay(spec.links);
  await r.start();
  out({ ready: true });
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (line.trim() === '') continue;
    const c = JSON.parse(line) as RelayCommand;
    const link = c.link ?? 1;
    let result: unknown;
    try {
      switch (c.cmd) {
        case 'status':
          result = r.status();
          break;
        case 'kill':
          result = { killed: r.kill(link) };
          break;
        case 'stall':
          result = { stalled: r.stall(link, c.on === true) };
          break;
        case 'inject':
          result = { written: await r.inject(link, c.dir ?? 'c2s', Buffer.from(c.hex ?? '', 'hex')) };
          break;
        case 'replay':
          result = await r.replay(link, c.filter as ReplayFilter);
          break;
        case 'select':
          result = r.select(c.filter as ReplayFilter).map((x) => ({ n: x.n, link: x.link, conn: x.conn, type: x.type, len: x.bytes.length, hex: x.bytes.length <= 256 ? x.bytes.toString('hex') : undefined }));
          break;
        case 'rewrite':
          result = r.rewrite(link, c.dir ?? 's2c', c.type ?? 0, c.count ?? 1, c.drop === true);
          break;
        case 'rewrites':
          result = { applied: r.rewritesApplied() };
          break;
        case 'replayNew':
          result = await r.replayOnNewConnection(link, c.ns ?? [], c.waitMs ?? 1500);
          break;
        case 'nonce':
          result = nonceReuse(r.capture);
          break;
        case 'close':
          r.close();
          out({ id: c.id, result: { closed: true } });
          process.exit(0);
          break;
        default:
          throw new Error(`unknown relay command ${c.cmd}`);
      }
      out({ id: c.id, result });
    } catch (e) {
      out({ id: c.id, error: e instanceof Error ? e.message : String(e) });
    }
  }
  r.close();
}

// --------------------------------------------------------------------------- stranger

interface CaseResult {
  name: string;
  written: number;
  closed: boolean;
  msToClose: number | null;
  answered: string[];
  reason?: string;
}

function describeFrames(fs: Frame[]): string[] {
  return fs.map((f) => String(f.type));
}

async function oneConnection(t: Target, name: string, payload: Buffer, waitMs: number): Promise<CaseResult> {
  const c = new RawConn(t.host, t.port, t.local);
  try {
    await c.connected();
    const t0 = Date.now();
    const written = await c.write(payload);
    const closed = await c.waitClosed(waitMs);
    const close = c.frames.find((f) => f.type === FrameType.Close);
    return { name, written, closed, msToClose: closed ? Date.now() - t0 : null, answered: describeFrames(c.frames), ...(close ? { reason: closeReason(close) } : {}) };
  } finally {
    c.destroy();
  }
}

/**
 * `locals`: a source address per case (else all from server.local): the server blocks a source
 * after more than FAIL_LIMIT (40) failed handshakes in 10 s, and a blocked source learns nothing about the later cases.
 */
async function stranger(spec: { server: Target; locals?: string[]; serverPublicKey: string; dport: number; marker: string; address: string }): Promise<void> {
  const serverPub = key(spec.serverPublicKey);
  const marker = Buffer.from(spec.marker, 'utf8');
  const packet = udpPacket(spec.address, '10.0.0.1', spec.dport, marker);
  const stranger = strangerIdentity(serverPub);
  const intro = linkIntro([{ family: 4, address: spec.address, prefix: 32 }]);
  const cases: Array<[string, Buffer]> = [
    ['DATA in clear', frames.data(1, packet)],
    ['DATA seq 2^53 in clear', frames.data(2 ** 53, packet)],
    ['LINKDOWN in clear', frames.linkDown(0)],
    ['CLOSE in clear', frames.close(CloseCode.Shutdown, 'forged', CLOSE_ANY_LINK)],
    ['garbage SEALED', garbageSealed(0x01020304, 0)],
    ['INITIATION bad mac1', (() => {
      const f = new Initiator(stranger).initiation(intro);
      f[f.length - 20] = (f[f.length - 20] as number) ^ 0xff;
      return f;
    })()],
    ['INITIATION unknown key, valid mac1', new Initiator(stranger).initiation(intro)],
    ['HELLO (open mode)', rawFrame(FrameType.Hello, Buffer.concat([Buffer.from('DPT2'), randomBytes(30)]))],
    ['oversized before handshake', rawFrame(FrameType.Initiation, randomBytes(4000))],
    ['version 1 frame', rawFrame(FrameType.Data, randomBytes(40), { version: 1 })],
  ];
  const results: CaseResult[] = [];
  for (const [i, [name, payload]] of cases.entries()) {
    results.push(await oneConnection({ ...spec.server, local: spec.locals?.[i] ?? spec.server.local }, name, payload, 2500));
  }
  out({ results });
}

// --------------------------------------------------------------------------- insider

interface InsiderSpec {
  server: Target;
  privateKey: string;
  serverPublicKey: string;
  /** The insider's own tunnel address (in its allowed_ips). */
  address: string;
  /** Another client's tunnel address (to spoof). */
  victim: string;
  dport: number;
  marker: string;
}

interface Up {
  conn: RawConn;
  kp: Keypair;
}

/** A confirmed link: handshake, sealed PING, the server's sealed PONG. */
async function upLink(spec: InsiderSpec, id: Identity, sessionId: Buffer): Promise<Up> {
  const conn = new RawConn(spec.server.host, spec.server.port, spec.server.local);
  await conn.connected();
  const est = await handshake(conn, id, linkIntro([{ family: 4, address: spec.address, prefix: 32 }], { sessionId }));
  if (!(await confirm(conn, est.keypair))) throw new Error('link not confirmed: no sealed PONG');
  return { conn, kp: est.keypair };
}

/** The sealed CLOSE the server sent before closing, if any: its reason. */
function sealedCloseReason(u: Up): string | undefined {
  for (const f of u.conn.frames) {
    if (f.type === FrameType.Close) return `(clear) ${closeReason(f)}`;
    if (f.type !== FrameType.Sealed) continue;
    const inner = openSealed(u.kp, f) ?? [];
    const c = inner.find((x) => x.type === FrameType.Close);
    if (c) return closeReason(c);
  }
  return undefined;
}

/** Seals with an arbitrary counter (the product's Keypair only counts up): the key is read from the keypair. */
function sealAt(kp: Keypair, counter: number, plain: Buffer): Buffer {
  const k = (kp as unknown as { sendKey: Buffer }).sendKey;
  return sealRecord(kp.cipher, k, kp.remoteIndex, counter, plain);
}

async function insider(spec: InsiderSpec): Promise<void> {
  const id = clientIdentity(key(spec.privateKey), key(spec.serverPublicKey));
  const sessionId = randomBytes(16);
  const marker = (tag: string): Buffer => Buffer.from(`${spec.marker}-${tag}`, 'utf8');
  const own = (tag: string): Buffer => udpPacket(spec.address, '10.0.0.1', spec.dport, marker(tag));
  let seq = 1;
  const data = (tag: string, src = spec.address): Buffer => frames.data(seq++, udpPacket(src, '10.0.0.1', spec.dport, marker(tag)));
  const innerHeader = (length: number, type: number): Buffer => {
    const b = Buffer.alloc(8);
    b.writeUInt32BE(length >>> 0, 0);
    b[4] = 2;
    b[5] = type;
    return b;
  };
  type Make = (u: Up) => Buffer;
  const seal = (plain: Buffer): Make => (u) => u.kp.seal(plain);
  const cases: Array<{ name: string; make: Make; expectClose: boolean }> = [
    { name: 'valid DATA from its own address (control: delivered)', make: (u) => u.kp.seal(data('valid')), expectClose: false },
    { name: 'DATA spoofing another client\'s source (dropped)', make: (u) => u.kp.seal(data('spoofed', spec.victim)), expectClose: false },
    { name: 'empty record (allowed)', make: seal(Buffer.alloc(0)), expectClose: false },
    { name: 'inner frame announcing 4 GiB', make: (u) => u.kp.seal(Buffer.concat([innerHeader(0xffffffff, FrameType.Data), Buffer.alloc(8, 1), own('4g')])), expectClose: true },
    { name: 'outer frame announcing 4 GiB (in clear, after the handshake)', make: () => Buffer.concat([innerHeader(0xffffffff, FrameType.Sealed), randomBytes(64)]), expectClose: true },
    { name: 'inner frame running past the end', make: (u) => u.kp.seal(Buffer.concat([innerHeader(4 + 8 + 1000, FrameType.Data), Buffer.alloc(8, 1), own('past')])), expectClose: true },
    { name: 'SEALED inside SEALED', make: (u) => u.kp.seal(u.kp.seal(data('nested'))), expectClose: true },
    { name: 'INITIATION inside a record', make: (u) => u.kp.seal(new Initiator(id).initiation(linkIntro([{ family: 4, address: spec.address, prefix: 32 }], { sessionId }))), expectClose: true },
    { name: 'RESPONSE inside a record', make: (u) => u.kp.seal(rawFrame(FrameType.Response, randomBytes(8 + 32 + 26))), expectClose: true },
    { name: 'HELLO inside a record', make: (u) => u.kp.seal(rawFrame(FrameType.Hello, Buffer.concat([Buffer.from('DPT2'), randomBytes(30)]))), expectClose: true },
    { name: 'unknown frame type 99 inside a record', make: (u) => u.kp.seal(rawFrame(99, randomBytes(16))), expectClose: true },
    { name: 'inner frame of version 1', make: (u) => u.kp.seal(rawFrame(FrameType.Ping, randomBytes(8), { version: 1 })), expectClose: true },
    { name: 'DATA seq 0', make: (u) => u.kp.seal(frames.data(0, own('seq0'))), expectClose: true },
    { name: 'DATA seq 2^53', make: (u) => u.kp.seal(frames.data(2 ** 53, own('seq53'))), expectClose: true },
    { name: 'DATA seq 2^64-1', make: (u) => u.kp.seal(rawFrame(FrameType.Data, Buffer.concat([Buffer.alloc(8, 0xff), own('seq64')]))), expectClose: true },
    { name: 'truncated frame header', make: seal(Buffer.from([0, 0, 0, 12, 2])), expectClose: true },
    { name: 'inner length below a header', make: (u) => u.kp.seal(Buffer.concat([innerHeader(2, FrameType.Ping), Buffer.alloc(8)])), expectClose: true },
    { name: 'PING with trailing bytes', make: (u) => u.kp.seal(Buffer.concat([frames.ping(7), Buffer.from([1, 2, 3])])), expectClose: true },
    { name: 'DATA with a 1-byte packet', make: (u) => u.kp.seal(rawFrame(FrameType.Data, Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 0x10, 0]), Buffer.from([0x45])]))), expectClose: false },
    { name: 'DATA with a hostile virtio_net_hdr (GSO, size 1)', make: (u) => {
      const p = own('gso');
      p[0] = 1; // NEEDS_CSUM
      p[1] = 5; // GSO_UDP_L4
      p.writeUInt16LE(1, 4); // gso_size 1
      return u.kp.seal(frames.data(seq++, p));
    }, expectClose: false },
    { name: 'LINKDOWN for a link it does not have', make: seal(frames.linkDown(7)), expectClose: false },
    { name: 'record counter 2^48 (beyond the limit)', make: (u) => sealAt(u.kp, REJECT_AFTER_MESSAGES, frames.ping(1)), expectClose: true },
    { name: 'record under an unknown index', make: (u) => garbageSealed(u.kp.remoteIndex ^ 0x5a5a5a5a, 5), expectClose: false },
    { name: 'record that fails authentication', make: (u) => garbageSealed(u.kp.remoteIndex, 1000), expectClose: true },
    { name: 'CLOSE of its own link inside a record', make: seal(frames.close(CloseCode.Shutdown, 'bye', 0)), expectClose: true },
    { name: 'CLOSE naming another link inside a record (misdirected: ignored)', make: seal(frames.close(CloseCode.Shutdown, 'bye', 1)), expectClose: false },
    { name: 'INITIATION in clear on the up link (rekey for another session)', make: () => new Initiator(id).initiation(linkIntro([{ family: 4, address: spec.address, prefix: 32 }])), expectClose: true },
  ];
  const results: Array<CaseResult & { expectClose: boolean; error?: string }> = [];
  for (const c of cases) {
    let u: Up | undefined;
    try {
      u = await upLink(spec, id, sessionId);
      const t0 = Date.now();
      const written = await u.conn.write(c.make(u));
      // Not closing is the expected outcome for some: a keepalive keeps the link from dying meanwhile.
      const closed = await u.conn.waitClosed(c.expectClose ? 2000 : 600);
      const reason = sealedCloseReason(u);
      results.push({ name: c.name, expectClose: c.expectClose, written, closed, msToClose: closed ? Date.now() - t0 : null, answered: describeFrames(u.conn.frames), ...(reason ? { reason } : {}) });
    } catch (e) {
      results.push({ name: c.name, expectClose: c.expectClose, written: 0, closed: false, msToClose: null, answered: [], error: e instanceof Error ? e.message : String(e) });
    } finally {
      u?.conn.destroy();
    }
  }
  out({ results });
}

// --------------------------------------------------------------------------- sessions

interface SessionsSpec {
  server: Target;
  privateKey: string;
  serverPublicKey: string;
  /** Sessions to open, each with a new session id, one link each. */
  count: number;
  /** Session i claims addresses[i % addresses.length]; none: an INITIATION that names no address. */
  addresses: string[];
  /**
   * sequential: one after the other, each confirmed (its sealed PING answered)
   * before the next, all then kept alive; pending: all at once, none confirmed.
   */
  mode: 'sequential' | 'pending';
  /** sequential: at least this long from one session's start to the next's (the server's per-peer handshake rate). */
  spacingMs?: number;
  holdMs: number;
}

/** Counts a message with its numbers blanked: equal reasons add up. */
function tally(into: Record<string, number>, message: string): void {
  const k = message.replace(/[0-9]+/g, 'N');
  into[k] = (into[k] ?? 0) + 1;
}

/** Sends a sealed PING and waits for the sealed PONG: the server confirms a keypair on its first authentic record. */
async function confirm(conn: RawConn, kp: Keypair, timeoutMs = 2000): Promise<boolean> {
  const from = conn.frames.length;
  await conn.write(kp.seal(frames.ping(42)));
  const pong = await conn.next((f) => f.type === FrameType.Sealed && (openSealed(kp, f) ?? []).some((x) => x.type === FrameType.Pong), timeoutMs, from);
  return pong !== undefined;
}

/** An insider opening many sessions of its own: does it crowd out other peers? */
async function sessions(spec: SessionsSpec): Promise<void> {
  const id = clientIdentity(key(spec.privateKey), key(spec.serverPublicKey));
  const intro = (i: number): LinkIntro => {
    const a = spec.addresses[i % Math.max(1, spec.addresses.length)];
    return linkIntro(a === undefined ? [] : [{ family: 4, address: a, prefix: 32 }], { sessionId: randomBytes(16) });
  };
  const ups: Up[] = [];
  const refused: Record<string, number> = {};
  let answered = 0;
  let confirmed = 0;
  const open = async (i: number): Promise<void> => {
    const conn = new RawConn(spec.server.host, spec.server.port, spec.server.local);
    try {
      await conn.connected();
      const est = await handshake(conn, id, intro(i));
      answered++;
      const u = { conn, kp: est.keypair };
      ups.push(u);
      if (spec.mode === 'sequential') {
        if (!(await confirm(conn, est.keypair))) throw new Error('no sealed PONG: not confirmed');
        confirmed++;
      }
    } catch (e) {
      tally(refused, e instanceof Error ? e.message : String(e));
      conn.destroy();
    }
  };
  const t0 = Date.now();
  if (spec.mode === 'sequential') {
    for (let i = 0; i < spec.count; i++) {
      const started = Date.now();
      await open(i);
      const wait = (spec.spacingMs ?? 0) - (Date.now() - started);
      if (wait > 0) await sleep(wait);
    }
  }
  else await Promise.all(Array.from({ length: spec.count }, (_, i) => open(i)));
  const openedMs = Date.now() - t0;
  // Keep every confirmed link alive (the server closes a link it hears nothing on).
  const until = Date.now() + spec.holdMs;
  while (Date.now() < until) {
    if (spec.mode === 'sequential') for (const u of ups) if (!u.conn.closed) u.conn.socket.write(u.kp.seal(frames.ping(2)));
    await sleep(200);
  }
  const aliveAtEnd = ups.filter((u) => !u.conn.closed).length;
  // Why the server closed the others: the reason of its (sealed, or in clear) CLOSE.
  const closedWith: Record<string, number> = {};
  for (const u of ups) if (u.conn.closed) tally(closedWith, sealedCloseReason(u) ?? '(no CLOSE)');
  for (const u of ups) u.conn.destroy();
  out({ attempted: spec.count, answered, confirmed, openedMs, aliveAtEnd, refused, closedWith });
}

// --------------------------------------------------------------------------- flood

interface FloodSpec {
  targets: Target[];
  sources: string[];
  serverPublicKey: string;
  total: number;
  concurrency: number;
  maxSeconds: number;
  /** How long an idle connection is held at most (the server should close it first). */
  idleHoldMs: number;
}

type Kind = 'idle' | 'garbage' | 'initiation';

interface KindStats {
  attempts: number;
  connected: number;
  connectErrors: number;
  closedByServer: number;
  heldMs: number[];
  cookies: number;
  responses: number;
  closeReasons: Record<string, number>;
}

async function flood(spec: FloodSpec): Promise<void> {
  const serverPub = key(spec.serverPublicKey);
  const strangers = Array.from({ length: 32 }, () => strangerIdentity(serverPub));
  const kinds: Kind[] = ['idle', 'garbage', 'initiation'];
  const fresh = (): KindStats => ({ attempts: 0, connected: 0, connectErrors: 0, closedByServer: 0, heldMs: [], cookies: 0, responses: 0, closeReasons: {} });
  const stats: Record<Kind, KindStats> = { idle: fresh(), garbage: fresh(), initiation: fresh() };
  const t0 = Date.now();
  const deadline = t0 + spec.maxSeconds * 1000;
  const open = new Set<RawConn>();
  let next = 0;

  const one = async (i: number): Promise<void> => {
    const kind = kinds[i % kinds.length] as Kind;
    const s = stats[kind];
    s.attempts++;
    const target = spec.targets[i % spec.targets.length] as Target;
    const c = new RawConn(target.host, target.port, spec.sources[i % spec.sources.length]);
    open.add(c);
    try {
      try {
        await c.connected();
      } catch {
        s.connectErrors++;
        return;
      }
      s.connected++;
      const since = Date.now();
      const hold = Math.max(0, Math.min(spec.idleHoldMs, deadline - Date.now()));
      if (kind === 'garbage') await c.write(randomBytes(256 + (i % 512)));
      if (kind === 'initiation') {
        const initiator = new Initiator(strangers[i % strangers.length] as Identity);
        const intro = linkIntro([{ family: 4, address: '10.0.0.200', prefix: 32 }]);
        await c.write(initiator.initiation(intro));
        // A persistent flooder answers cookies, so that the server must do the Diffie-Hellman.
        let from = 0;
        for (let round = 0; round < 2; round++) {
          const f = await c.next((x) => x.type === FrameType.Cookie || x.type === FrameType.Response, hold, from);
          if (f === undefined || f.type !== FrameType.Cookie) break;
          from = c.frames.indexOf(f) + 1;
          s.cookies++;
          if (!initiator.cookie(f.bytes, FRAME_HEADER_BYTES, f.bytes.length)) break;
          await c.write(initiator.initiation(intro));
        }
      }
      await c.waitClosed(Math.max(0, hold - (Date.now() - since)));
      if (c.closed) {
        s.closedByServer++;
        s.heldMs.push(Date.now() - since);
      }
      s.responses += c.frames.filter((f) => f.type === FrameType.Response).length;
      for (const f of c.frames) {
        if (f.type === FrameType.Close) {
          const r = closeReason(f).replace(/[0-9]+/g, 'N').slice(0, 60);
          s.closeReasons[r] = (s.closeReasons[r] ?? 0) + 1;
        }
      }
    } finally {
      c.destroy();
      open.delete(c);
    }
  };

  const worker = async (): Promise<void> => {
    while (next < spec.total && Date.now() < deadline) await one(next++);
  };
  const stopAll = setTimeout(() => {
    for (const c of open) c.destroy();
  }, spec.maxSeconds * 1000 + 2000);
  await Promise.all(Array.from({ length: spec.concurrency }, worker));
  clearTimeout(stopAll);
  const summary = Object.fromEntries(
    kinds.map((k) => {
      const s = stats[k];
      const held = [...s.heldMs].sort((a, b) => a - b);
      return [k, { ...s, heldMs: undefined, heldMsP50: held[Math.floor(held.length / 2)] ?? null, heldMsMax: held.at(-1) ?? null }];
    }),
  );
  out({ attempts: next, sources: spec.sources.length, durationMs: Date.now() - t0, ...summary });
}

// --------------------------------------------------------------------------- udp sink

/** Prints every datagram received on ADDRESS:PORT as one line of text: what reached the TUN and the host. */
async function udpSink(spec: { address: string; port: number }): Promise<void> {
  const { createSocket } = await import('node:dgram');
  const s = createSocket('udp4');
  s.on('message', (m: Buffer) => process.stdout.write(`${m.toString('utf8').replace(/[^\x20-\x7e]/g, '.')}\n`));
  await new Promise<void>((r) => s.bind(spec.port, spec.address, () => r()));
  process.stderr.write('listening\n');
  await new Promise(() => {});
}

// --------------------------------------------------------------------------- main

const [command, arg] = process.argv.slice(2);
const spec = JSON.parse(arg ?? '{}') as unknown;
switch (command) {
  case 'relay':
    await relay(spec as { links: RelayLinkSpec[] });
    break;
  case 'stranger':
    await stranger(spec as Parameters<typeof stranger>[0]);
    break;
  case 'insider':
    await insider(spec as InsiderSpec);
    break;
  case 'sessions':
    await sessions(spec as SessionsSpec);
    break;
  case 'flood':
    await flood(spec as FloodSpec);
    break;
  case 'udp-sink':
    await udpSink(spec as { address: string; port: number });
    break;
  default:
    process.stderr.write('usage: attack.ts relay|stranger|insider|flood JSON\n');
    process.exit(2);
}
// Sockets the attacker left open must not keep it alive.
if (command !== 'relay') {
  await sleep(10);
  process.exit(0);
}
