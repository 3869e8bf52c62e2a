// Root end-to-end: the secure channel attacked the way an attacker works, on
// the wire, in network namespaces, against the real binary. An on-path relay
// (test/helpers/attacker.ts, running in its own namespace between client and
// server) records, replays, injects and resets; strangers and a flood come
// from an attacker host with hundreds of addresses; a malicious insider holds
// a key the server lists. Each test performs one attack that succeeded
// against the psk-challenge protocol and asserts it is defended, and that it
// was really carried out (bytes written, frames recorded).
//
//   client ns ══ link 1, 2 ══ relay ns (man in the middle) ══ link 1, 2 ══ server ns ══ attacker ns
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { FrameType } from '../../src/protocol/frame.js';
import { frames, garbageSealed, sealedHeader, udpPacket } from '../helpers/attacker.js';
import { CLIENT_YAML, ROOT, SERVER_YAML, skipReason, Testbed, waitFor, type Side, type StatsSnapshot, type StreamSummary } from '../helpers/netns.js';

const skip = skipReason();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const CLI = join(ROOT, 'dist', 'cli', 'index.js');
const ATTACK = join(ROOT, 'test', 'helpers', 'attack.ts');
/** Listen addresses of the server, and where the relay takes the client's links. */
const SERVER_LISTEN = ['10.0.21.1:31411', '10.0.22.1:31413'];
const RELAY_LISTEN = ['10.0.11.1:31411', '10.0.12.1:31413'];
const INSIDER_ADDRESS = '10.0.0.66';
/** The insider may claim any address in 10.0.0.64/26: a session per address, nothing to retire one by. */
const INSIDER_ALLOWED = '10.0.0.64/26';

type Session = StatsSnapshot['sessions'][number];
type Drops = NonNullable<Session['records']>;

interface Keys {
  serverPub: string;
  clientPub: string;
  insiderPriv: string;
  insiderPub: string;
  serverKeyFile: string;
  clientKeyFile: string;
}

/** Key files as an operator makes them: dp-tcp genkey / pubkey, chmod 600. */
function makeKeys(dir: string): Keys {
  const genkey = (name: string): { file: string; priv: string; pub: string } => {
    const priv = execFileSync(process.execPath, [CLI, 'genkey'], { encoding: 'utf8' }).trim();
    const pub = execFileSync(process.execPath, [CLI, 'pubkey'], { input: priv, encoding: 'utf8' }).trim();
    const file = join(dir, `${name}.key`);
    writeFileSync(file, `${priv}\n`, { mode: 0o600 });
    chmodSync(file, 0o600);
    return { file, priv, pub };
  };
  const s = genkey('server');
  const c = genkey('client');
  const i = genkey('insider');
  return { serverPub: s.pub, clientPub: c.pub, insiderPriv: i.priv, insiderPub: i.pub, serverKeyFile: s.file, clientKeyFile: c.file };
}

function serverYaml(k: Keys): string {
  const keys =
    `  private_key_file: ${k.serverKeyFile}\n` +
    `  peers:\n` +
    `    - { name: client, public_key: "${k.clientPub}", allowed_ips: [10.0.0.2/32, "fd00:dd::2/128"] }\n` +
    `    - { name: insider, public_key: "${k.insiderPub}", allowed_ips: [${INSIDER_ALLOWED}] }\n`;
  return SERVER_YAML.replace('10.0.1.1:31411', SERVER_LISTEN[0]!).replace('10.0.2.1:31413', SERVER_LISTEN[1]!).replace('logger:', `${keys}logger:`);
}

function clientYaml(k: Keys): string {
  const keys = `  private_key_file: ${k.clientKeyFile}\n  server_public_key: "${k.serverPub}"\n`;
  return CLIENT_YAML.replace('remote: "10.0.1.1:31411", local: 10.0.1.2', `remote: "${RELAY_LISTEN[0]}", local: 10.0.11.2`)
    .replace('remote: "10.0.2.1:31413", local: 10.0.2.2', `remote: "${RELAY_LISTEN[1]}", local: 10.0.12.2`)
    .replace('logger:', `${keys}logger:`);
}

/** The on-path relay, a child process in the relay namespace, driven one JSON command per line. */
class RelayProcess {
  private nextId = 1;
  private readonly waiting = new Map<number, (v: { result?: unknown; error?: string }) => void>();
  private readonly ready: Promise<void>;

  constructor(private readonly p: ChildProcess) {
    let markReady: () => void = () => {};
    this.ready = new Promise((r) => (markReady = r));
    const lines = createInterface({ input: p.stdout! });
    lines.on('line', (line) => {
      const m = JSON.parse(line) as { id?: number; ready?: boolean; result?: unknown; error?: string };
      if (m.ready) markReady();
      if (m.id !== undefined) this.waiting.get(m.id)?.(m);
    });
  }

  static async start(tb: Testbed): Promise<RelayProcess> {
    const links = [0, 1].map((i) => {
      const [lh, lp] = RELAY_LISTEN[i]!.split(':') as [string, string];
      const [th, tp] = SERVER_LISTEN[i]!.split(':') as [string, string];
      return { listen: { host: lh, port: Number(lp) }, target: { host: th, port: Number(tp), local: `10.0.2${i + 1}.2` } };
    });
    // At the tunnels' own priority (nice -15): every keepalive goes through the relay, and a relay starved for
    // the 800 ms of the dead timer would take both links down in the middle of a test that counts reconnects.
    const p = tb.spawn('relay', 'nice', ['-n', '-15', process.execPath, '--import', 'tsx', ATTACK, 'relay', JSON.stringify({ links })], { interactive: true });
    const r = new RelayProcess(p);
    await Promise.race([r.ready, sleep(10_000).then(() => Promise.reject(new Error('the relay did not start')))]);
    return r;
  }

  async cmd<T>(c: Record<string, unknown>): Promise<T> {
    const id = this.nextId++;
    const reply = new Promise<{ result?: unknown; error?: string }>((r) => this.waiting.set(id, r));
    this.p.stdin!.write(`${JSON.stringify({ id, ...c })}\n`);
    const m = await reply;
    this.waiting.delete(id);
    if (m.error !== undefined) throw new Error(`relay: ${m.error}`);
    return m.result as T;
  }
}

interface ReplayResult {
  frames: number;
  bytes: number;
  written: number;
  sizes: Record<string, number>;
}

interface Selected {
  n: number;
  link: number;
  conn: number;
  type: number;
  len: number;
  hex?: string;
}

interface NonceReport {
  records: number;
  distinct: number;
  indexes: { c2s: number; s2c: number };
  reused: string[];
}

describe('attacks on the secure channel (on-path relay, strangers, an insider, a flood)', { skip, timeout: 300_000 }, () => {
  let tb: Testbed;
  let relay: RelayProcess;
  let keys: Keys;
  let attackers: string[];

  /** A status snapshot written after this call (the file is rewritten every second). */
  async function fresh(side: Side): Promise<StatsSnapshot & { time: string }> {
    const t0 = Date.now();
    let s: StatsSnapshot & { time: string } = { time: '' } as StatsSnapshot & { time: string };
    await waitFor(
      () => {
        try {
          s = tb.stats(side) as StatsSnapshot & { time: string };
        } catch {
          return false; // being renamed into place
        }
        return Date.parse(s.time) > t0;
      },
      `a new ${side} stats snapshot`,
      5000,
    );
    return s;
  }

  /** The real client's session (the server also holds the insider's). */
  function realSession(s: StatsSnapshot): Session {
    const found = s.sessions.find((x) => x.peerAddresses.some((a) => a.startsWith('10.0.0.2/')));
    assert.ok(found, 'the real client has a session');
    return found;
  }

  /**
   * Both links of the real client up on both sides (tb.waitUp wants a single
   * session; the server also holds the insider's).
   */
  async function realUp(timeoutMs = 10_000): Promise<void> {
    const up = (side: Side): boolean => {
      try {
        const s = tb.stats(side).sessions.find((x) => side === 'client' || x.peerAddresses.some((a) => a.startsWith('10.0.0.2/')));
        return s !== undefined && s.links.filter((l) => l.state === 'up').length === 2;
      } catch {
        return false;
      }
    };
    await waitFor(() => up('client') && up('server'), "the real client's two links up on both sides", timeoutMs, () => tb.log('client').slice(-3000));
  }

  function dropped(s: Session): number {
    const r = s.records as Drops;
    return r.duplicate + r.unknown_key + r.too_old + r.expired;
  }

  /** Connections per link, in link id order (the snapshot lists links in the order they first came up). */
  function connects(s: Session): number[] {
    return [...s.links].sort((a, b) => a.id - b.id).map((l) => l.connects);
  }

  /** Starts a UDP sink in a namespace; returns what it has received so far, as lines. */
  async function sink(side: Side, address: string, port: number): Promise<() => string[]> {
    const file = join(tb.dir, `sink-${side}-${port}.txt`);
    const p = tb.spawn(side, process.execPath, ['--import', 'tsx', ATTACK, 'udp-sink', JSON.stringify({ address, port })], { stdout: file });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('udp sink did not start')), 10_000);
      p.stderr?.on('data', (d: Buffer) => {
        if (d.toString().includes('listening')) {
          clearTimeout(t);
          resolve();
        }
      });
    });
    return () => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => l !== '') : []);
  }

  async function attack<T>(cmd: string, spec: unknown, timeoutMs = 60_000): Promise<T> {
    const { stdout } = await tb.run('attacker', process.execPath, ['--import', 'tsx', ATTACK, cmd, JSON.stringify(spec)], timeoutMs);
    return JSON.parse(stdout) as T;
  }

  /**
   * Stalls link 2's connection at the relay until both sides declare it dead and
   * the client redials it; returns the capture mark from before the stall.
   */
  async function stallLink2(): Promise<number> {
    const { captured: mark } = await relay.cmd<{ captured: number }>({ cmd: 'status' });
    const ups2 = tb.linkUps('wan2');
    await relay.cmd({ cmd: 'stall', link: 2, on: true });
    await tb.waitLinkBack('wan2', ups2, 6000);
    await realUp();
    await sleep(1200);
    return mark;
  }

  function assertComplete(s: StreamSummary, what: string): void {
    console.log(`# ${what}: sent ${s.sent}, received ${s.received}, missing ${s.missing}, duplicates ${s.duplicates}`);
    assert.equal(s.duplicates, 0, `${what}: no datagram delivered twice`);
    assert.equal(s.missing, 0, `${what}: no datagram lost`);
    assert.equal(s.received, s.sent, `${what}: every datagram delivered once`);
  }

  before(async () => {
    tb = await Testbed.create('atk');
    await tb.addRelayHost();
    // 320 strangers over 10 /24 prefixes: more than the pending table (256) holds, 32 per prefix.
    attackers = await tb.addAttackerHost(320, 32);
    keys = makeKeys(tb.dir);
    relay = await RelayProcess.start(tb);
    tb.startDpTcp('server', serverYaml(keys));
    tb.startDpTcp('client', clientYaml(keys));
    await tb.waitUp(2);
  });
  after(async () => {
    await tb?.destroy();
  });

  it('1. on-path record, link reset, replay: no nonce reuse, replayed records counted and never delivered', async () => {
    const c0 = realSession(await fresh('client'));
    const ups1 = tb.linkUps('wan1');
    let midReplay: ReplayResult | undefined;
    const stream = await tb.udpStream(
      500,
      5,
      async () => {
        await sleep(1000);
        // (b) the man in the middle drops link 1's connection: the client re-handshakes mid-stream.
        const killed = await relay.cmd<{ killed: number }>({ cmd: 'kill', link: 1 });
        assert.equal(killed.killed, 1, 'link 1 was reset');
        await tb.waitLinkBack('wan1', ups1, 3000);
        await sleep(700);
        // (c) mid-stream: every server -> client record so far, written again towards the client on link 2.
        midReplay = await relay.cmd<ReplayResult>({ cmd: 'replay', link: 2, filter: { dir: 's2c', types: [FrameType.Sealed], forwarded: true } });
      },
      '10.0.0.2',
      200,
      'server',
    );
    assertComplete(stream, 'server -> client stream with link 1 reset and records replayed');
    assert.ok(midReplay && midReplay.frames > 500 && midReplay.written === midReplay.bytes, `replayed mid-stream: ${JSON.stringify(midReplay)}`);

    // After the stream, in quiet: the data records (they went on both links, so the client had each) replayed on both links.
    await sleep(1200);
    const before = realSession(await fresh('client'));
    const replayed: ReplayResult[] = [];
    for (const link of [1, 2]) {
      replayed.push(await relay.cmd<ReplayResult>({ cmd: 'replay', link, filter: { dir: 's2c', types: [FrameType.Sealed], minBytes: 120 } }));
    }
    const n = replayed.reduce((a, r) => a + r.frames, 0);
    assert.ok(replayed.every((r) => r.written === r.bytes && r.frames > 1000), `replayed: ${JSON.stringify(replayed.map((r) => r.frames))}`);
    await sleep(1500);
    const after = realSession(await fresh('client'));
    const counted = dropped(after) - dropped(before);
    console.log(
      `# replayed ${midReplay?.frames} records mid-stream and ${n} in quiet; client counted ${counted} of the latter as ` +
        `duplicate/unknown_key/too_old (${JSON.stringify(after.records)}); delivered to the TUN meanwhile: ${after.rxPackets - before.rxPackets} (background)`,
    );
    // The hosts' own background packets (IPv6 neighbour discovery, MLD) may cross the tunnel meanwhile:
    // each is delivered once and its second copy counted as a duplicate. Nothing else.
    const background = after.rxPackets - before.rxPackets;
    assert.ok(background <= 4, `at most a few background packets delivered meanwhile (${background}), none of the ${n} replayed`);
    assert.ok(counted >= n && counted <= n + background, `every replayed record was counted as dropped (${counted} for ${n})`);
    assert.equal(after.tampered, c0.tampered, 'a replayed record is not "tampered"');
    assert.deepEqual(connects(after), [connects(c0)[0]! + 1, connects(c0)[1]!], 'replays closed no link (only the reset one reconnected)');
    assert.ok(after.links.every((l) => l.state === 'up'));

    // (c') the old handshake: recorded INITIATIONs replayed to the server on new connections get no RESPONSE.
    // Only those the server answered (a RESPONSE on the same connection): the client may have dialled
    // before the server listened, and an INITIATION that never reached it is not a replay of this handshake.
    const responded = new Set(
      (await relay.cmd<Selected[]>({ cmd: 'select', filter: { dir: 's2c', types: [FrameType.Response] } })).map((r) => `${r.link}/${r.conn}`),
    );
    const recorded = await relay.cmd<Selected[]>({ cmd: 'select', filter: { dir: 'c2s', types: [FrameType.Initiation], forwarded: true } });
    const inits = recorded.filter((r) => responded.has(`${r.link}/${r.conn}`));
    console.log(`# INITIATIONs recorded ${recorded.length}, answered by the server ${inits.length}`);
    assert.ok(inits.length >= 3, `${inits.length} answered INITIATIONs recorded (two links and the redial)`);
    const s0 = await fresh('server');
    for (const init of inits.slice(0, 3)) {
      const r = await relay.cmd<{ written: number; answered: number[]; closed: boolean }>({ cmd: 'replayNew', link: init.link, ns: [init.n], waitMs: 1500 });
      assert.ok(r.written > 0, 'the INITIATION was written');
      assert.ok(!r.answered.includes(FrameType.Response), `a replayed INITIATION got no RESPONSE (answered ${r.answered})`);
      assert.ok(r.closed, 'and its connection was closed');
    }
    const s1 = await fresh('server');
    assert.equal(s1.server!.refused['replay']! - s0.server!.refused['replay']!, 3, 'three replays refused as such');
    assert.equal(s1.sessions.length, s0.sessions.length, 'no session made');

    // (c'') an old RESPONSE served in place of the fresh one when the client redials link 1.
    const epoch = realSession(await fresh('client')).epoch;
    const armed = await relay.cmd<{ armed: boolean }>({ cmd: 'rewrite', link: 1, dir: 's2c', type: FrameType.Response, count: 1 });
    assert.ok(armed.armed);
    const ups = tb.linkUps('wan1');
    await relay.cmd({ cmd: 'kill', link: 1 });
    await tb.waitLinkBack('wan1', ups, 5000);
    assert.equal((await relay.cmd<{ applied: number }>({ cmd: 'rewrites' })).applied, 1, 'the old RESPONSE was served');
    await waitFor(() => /handshake failed: RESPONSE to another INITIATION/.test(tb.log('client')), 'the client refused the old RESPONSE', 3000);
    assert.equal(realSession(await fresh('client')).epoch, epoch, 'the client kept its server epoch');
    await realUp();

    // (a) the whole capture so far: no (receiver index, counter) sealed twice with different bytes.
    const nr = await relay.cmd<NonceReport>({ cmd: 'nonce' });
    console.log(`# capture: ${nr.records} sealed records, ${nr.distinct} distinct (index, counter), keypairs c2s ${nr.indexes.c2s} s2c ${nr.indexes.s2c}, reused ${nr.reused.length}`);
    assert.deepEqual(nr.reused, [], 'no nonce reused');
    assert.ok(nr.indexes.c2s >= 3 && nr.indexes.s2c >= 3, 'the capture spans several handshakes per direction');
    assert.ok(nr.records > nr.distinct, 'identical copies on two links were seen (and are not reuse)');
  });

  it('5. sealed control records (PING, PONG, LINKDOWN, CLOSE) replayed on either link: duplicates, no link closed', async () => {
    // Link 2 stalls in the middle: both sides declare it dead, LINKDOWN goes on link 1, a CLOSE on link 2.
    const mark = await stallLink2();
    const ctl = (dir: string): Promise<Selected[]> =>
      relay.cmd<Selected[]>({ cmd: 'select', filter: { dir, types: [FrameType.Sealed], since: mark, maxBytes: 300, forwarded: true } });
    const c2s = await ctl('c2s');
    const s2c = await ctl('s2c');
    // Sealed control records by size (frame header 8, index 4, counter 8, tag 16 around the inner frame):
    // PING/PONG 52 bytes, LINKDOWN 46, CLOSE 46 + its reason.
    const kinds = (l: Selected[]): Record<string, number> => {
      const k: Record<string, number> = { ping_pong: 0, linkdown: 0, close_or_small_data: 0 };
      for (const r of l) k[r.len === 52 ? 'ping_pong' : r.len === 46 ? 'linkdown' : 'close_or_small_data']!++;
      return k;
    };
    console.log(`# recorded control records since the stall: client->server ${JSON.stringify(kinds(c2s))}, server->client ${JSON.stringify(kinds(s2c))}`);
    assert.ok(kinds(c2s).linkdown! + kinds(s2c).linkdown! >= 1, 'a LINKDOWN was recorded');
    assert.ok(kinds(c2s).ping_pong! > 0 && kinds(s2c).ping_pong! > 0, 'PINGs and PONGs were recorded');

    const cBefore = realSession(await fresh('client'));
    const sBefore = realSession(await fresh('server'));
    let toServer = 0;
    let toClient = 0;
    for (const link of [1, 2]) {
      for (const dir of ['c2s', 's2c'] as const) {
        const r = await relay.cmd<ReplayResult>({ cmd: 'replay', link, filter: { dir, types: [FrameType.Sealed], since: mark, maxBytes: 300, forwarded: true } });
        assert.equal(r.written, r.bytes, 'replayed bytes written');
        if (dir === 'c2s') toServer += r.frames;
        else toClient += r.frames;
      }
    }
    await sleep(1500);
    const cAfter = realSession(await fresh('client'));
    const sAfter = realSession(await fresh('server'));
    console.log(
      `# replayed ${toServer} control records to the server and ${toClient} to the client on both links; counted as dropped: ` +
        `server ${dropped(sAfter) - dropped(sBefore)}, client ${dropped(cAfter) - dropped(cBefore)}`,
    );
    // As in 1: a background packet of the hosts' own may cross meanwhile, delivered once and its second copy dropped.
    for (const [side, before, after, n] of [
      ['server', sBefore, sAfter, toServer],
      ['client', cBefore, cAfter, toClient],
    ] as const) {
      const background = after.rxPackets - before.rxPackets;
      const counted = dropped(after) - dropped(before);
      assert.ok(background <= 4, `${side}: at most a few background packets delivered meanwhile (${background}), none of the ${n} replayed`);
      assert.ok(counted >= n && counted <= n + background, `${side}: every replayed record was dropped (${counted} for ${n}, background ${background})`);
    }
    assert.deepEqual(connects(cAfter), connects(cBefore), 'no reconnect on the client');
    assert.deepEqual(connects(sAfter), connects(sBefore), 'no reconnect on the server');
    assert.ok(cAfter.links.every((l) => l.state === 'up') && sAfter.links.every((l) => l.state === 'up'), 'both links up');
  });

  it('5b. a sealed CLOSE withheld on a stalled link and delivered later on the healthy link: ignored as misdirected, the healthy link stays up', async () => {
    // The client's CLOSE of link 2 ("dead: nothing heard ...") on the stalled connection: recorded, never forwarded.
    // PINGs (52 bytes) are left out; background DATA of that size the server already had from link 1.
    // Whether the CLOSE still fits the stalled connection depends on its buffers at that moment, and
    // whether the client declares the link dead before the server does: up to eight stalls (CI once
    // saw three in a row without one, a full local run on 2026-12-04 five).
    // A withheld record of that size may also be background DATA (then dropped as a copy the server
    // already had): such a stall is tried again, within the same eight.
    let held: Selected[] = [];
    let attempts = 0;
    let misdirected = 0;
    let duplicates = 0;
    let s0 = realSession(await fresh('server'));
    let s1 = s0;
    for (; attempts < 8 && misdirected === 0; attempts++) {
      const mark = await stallLink2();
      held = await relay.cmd<Selected[]>({
        cmd: 'select',
        filter: { dir: 'c2s', types: [FrameType.Sealed], since: mark, minBytes: 53, maxBytes: 300, forwarded: false },
      });
      if (held.length === 0) continue;
      s0 = realSession(await fresh('server'));
      for (const h of held) {
        const r = await relay.cmd<{ written: number }>({ cmd: 'inject', link: 1, dir: 'c2s', hex: h.hex });
        assert.equal(r.written, h.len, 'the withheld record was delivered on link 1');
      }
      await sleep(1500);
      s1 = realSession(await fresh('server'));
      misdirected = (s1.misdirected ?? 0) - (s0.misdirected ?? 0);
      duplicates = dropped(s1) - dropped(s0);
      console.log(
        `# withheld records (${held.map((h) => `${h.len} bytes`).join(', ')}) delivered on the healthy link 1: misdirected ${misdirected}, ` +
          `dropped ${duplicates}; server link connects ${connects(s0)} -> ${connects(s1)}, states ${s1.links.map((l) => l.state)}`,
      );
    }
    assert.ok(held.length >= 1, `a sealed record was withheld (${attempts} stalls)`);
    console.log(`# a client CLOSE withheld after ${attempts} stall(s)`);
    assert.ok(misdirected >= 1 && misdirected <= held.length, 'the server opened a CLOSE of link 2 on link 1 and ignored it (misdirected)');
    // (The hosts' own background packets may add a duplicate record or two meanwhile: one copy per link.)
    assert.ok(misdirected + duplicates >= held.length, 'every withheld record was a misdirected CLOSE or a copy already received');
    assert.deepEqual(connects(s1), connects(s0), 'the healthy link was not closed');
    assert.ok(s1.links.every((l) => l.state === 'up'), 'both links up on the server');
    await realUp();
  });

  it('2. forged frames injected into established links (in clear, garbage SEALED), and from strangers: nothing reaches a TUN', async () => {
    const toServer = await sink('server', '10.0.0.1', 9101);
    const toClient = await sink('client', '10.0.0.2', 9102);
    const pkt = (src: string, dst: string, port: number, tag: string): Buffer => udpPacket(src, dst, port, Buffer.from(`FORGED-${tag}`));
    const forged = (dir: 'c2s' | 's2c'): Array<[string, string]> => {
      const [src, dst, port] = dir === 'c2s' ? (['10.0.0.2', '10.0.0.1', 9101] as const) : (['10.0.0.1', '10.0.0.2', 9102] as const);
      return [
        ['DATA', frames.data(900_000, pkt(src, dst, port, `${dir}-data`)).toString('hex')],
        ['DATA seq 2^53', frames.data(2 ** 53, pkt(src, dst, port, `${dir}-seq53`)).toString('hex')],
        ['LINKDOWN', frames.linkDown(1).toString('hex')],
        // Injected fourth, so into link 2 (id 1): the CLOSE names the link that carries it, and is refused all the same (in clear).
        ['CLOSE', frames.close(1, 'forged', 1).toString('hex')],
      ];
    };
    const s0 = realSession(await fresh('server'));
    const c0 = realSession(await fresh('client'));
    let injected = 0;
    let closedByClear = 0;
    const stream = await tb.udpStream(1000, 8, async () => {
      await sleep(500);
      for (const dir of ['c2s', 's2c'] as const) {
        for (const [name, hex] of forged(dir)) {
          const link = 1 + (injected % 2);
          const name_ = `wan${link}`;
          const ups = tb.linkUps(name_);
          const r = await relay.cmd<{ written: number }>({ cmd: 'inject', link, dir, hex });
          assert.ok(r.written > 0, `${name} ${dir} written`);
          injected++;
          // A frame in clear on an established link is a protocol error: that link closes and is redialled.
          await tb.waitLinkBack(name_, ups, 4000);
          closedByClear++;
          await realUp(4000);
        }
        // Garbage SEALED: under an index nobody has (dropped), and under a live one (tampered: that link closes).
        const recent = await relay.cmd<Selected[]>({ cmd: 'select', filter: { dir, types: [FrameType.Sealed], maxBytes: 100, link: 1 } });
        const h = sealedHeader(Buffer.from(recent.at(-1)!.hex!, 'hex'));
        const unknown = await relay.cmd<{ written: number }>({ cmd: 'inject', link: 1, dir, hex: garbageSealed((h.index ^ 0x5a5a5a5a) >>> 0, 1).toString('hex') });
        assert.ok(unknown.written > 0);
        await sleep(300);
        const ups = tb.linkUps('wan1');
        const bad = await relay.cmd<{ written: number }>({ cmd: 'inject', link: 1, dir, hex: garbageSealed(h.index, h.counter + 100_000).toString('hex') });
        assert.ok(bad.written > 0);
        await tb.waitLinkBack('wan1', ups, 4000);
        await realUp(4000);
      }
    });
    assertComplete(stream, 'client -> server stream while frames were forged on its links');
    await sleep(1200);
    const s1 = realSession(await fresh('server'));
    const c1 = realSession(await fresh('client'));
    console.log(
      `# injected ${injected} frames in clear (each closed its link: ${closedByClear}) and 4 garbage SEALED; ` +
        `tampered server ${s1.tampered - s0.tampered} client ${c1.tampered - c0.tampered}, unknown_key server ${s1.records!.unknown_key - s0.records!.unknown_key} client ${c1.records!.unknown_key - c0.records!.unknown_key}`,
    );
    assert.equal(s1.tampered - s0.tampered, 1, 'the server counted the record that failed authentication');
    assert.equal(c1.tampered - c0.tampered, 1, 'the client counted the record that failed authentication');
    assert.equal(s1.records!.unknown_key - s0.records!.unknown_key, 1, 'the unknown index was dropped, not fatal (server)');
    assert.equal(c1.records!.unknown_key - c0.records!.unknown_key, 1, 'the unknown index was dropped, not fatal (client)');
    assert.ok(/in clear on an encrypted session/.test(tb.log('server')) && /in clear on an encrypted session/.test(tb.log('client')), 'in-clear frames refused as such');

    // Strangers, on connections of their own: no key, so nothing is processed.
    const st = await attack<{ results: Array<{ name: string; written: number; closed: boolean; answered: string[]; reason?: string }> }>('stranger', {
      server: { host: '10.0.21.1', port: 31411 },
      // One source per case, none of them blocked for the failures of the others.
      locals: attackers.slice(290, 300),
      serverPublicKey: keys.serverPub,
      dport: 9101,
      marker: 'FORGED-stranger',
      address: '10.0.0.2',
    });
    for (const r of st.results) {
      console.log(`#   stranger: ${r.name}: written ${r.written}, closed ${r.closed}, answered [${r.answered}]${r.reason ? `, "${r.reason}"` : ''}`);
      assert.ok(r.written > 0, `${r.name}: sent`);
      assert.ok(r.closed, `${r.name}: the server closed the connection`);
      assert.ok(!r.answered.includes(String(FrameType.Response)), `${r.name}: no RESPONSE`);
      // What does not authenticate is dropped without a word: nothing to learn, nothing to amplify.
      // Only another dp-tcp is told why: a client without a key (HELLO), another protocol version.
      if (r.name !== 'HELLO (open mode)' && r.name !== 'version 1 frame') assert.deepEqual(r.answered, [], `${r.name}: no answer at all`);
    }
    assert.match(st.results.find((r) => r.name === 'version 1 frame')?.reason ?? '', /unsupported protocol version 1/, 'a v1 peer is told why');
    await sleep(500);
    assert.deepEqual(toServer(), [], 'nothing forged reached the server host');
    assert.deepEqual(toClient(), [], 'nothing forged reached the client host');
    await realUp();
  });

  it('4. a malicious insider with its own key: malformed records close its link only; the server lives, the real client never notices', async () => {
    const delivered = await sink('server', '10.0.0.1', 9104);
    const c0 = realSession(await fresh('client'));
    type R = { name: string; expectClose: boolean; written: number; closed: boolean; msToClose: number | null; reason?: string; error?: string };
    let results: R[] = [];
    const stream = await tb.udpStream(500, 6, async () => {
      await sleep(300);
      results = (
        await attack<{ results: R[] }>('insider', {
          server: { host: '10.0.21.1', port: 31411, local: attackers[310] },
          privateKey: keys.insiderPriv,
          serverPublicKey: keys.serverPub,
          address: INSIDER_ADDRESS,
          victim: '10.0.0.2',
          dport: 9104,
          marker: 'INSIDER',
        })
      ).results;
    });
    for (const r of results) {
      console.log(`#   insider: ${r.name}: ${r.error ?? (r.closed ? `closed in ${r.msToClose} ms: ${r.reason ?? '(no reason)'}` : 'link stays up')}`);
    }
    assertComplete(stream, 'real client stream during the insider attack');
    assert.ok(tb.alive('server'), 'the server process lives');
    for (const r of results) {
      assert.equal(r.error, undefined, `${r.name}: the insider's handshake worked`);
      assert.ok(r.written > 0, `${r.name}: sent`);
      assert.equal(r.closed, r.expectClose, `${r.name}: ${r.expectClose ? 'its link closed' : 'its link stayed up'}`);
      // Closed for the record, not by the 800 ms dead timer of a link that then fell silent (1-5 ms seen).
      // A close with a reason names it; one without (a CLOSE of its own link) is timed.
      if (r.expectClose) {
        const forRecord = r.reason !== undefined ? !/^dead/.test(r.reason) : r.msToClose !== null && r.msToClose < 700;
        assert.ok(forRecord, `${r.name}: closed for the record (${r.msToClose} ms, ${r.reason})`);
      }
    }
    await sleep(500);
    assert.deepEqual(delivered(), ['INSIDER-valid'], 'only the valid DATA from its own address was delivered (the control case)');
    const c1 = realSession(await fresh('client'));
    assert.deepEqual(connects(c1), connects(c0), "the real client's links never went down");
    const ms = await tb.timeToTunnel(2000);
    console.log(`# ${results.length} insider records, ${results.filter((r) => r.closed).length} closed its link; server alive; real client ping ${ms} ms`);
    const s = await fresh('server');
    assert.ok(s.server!.handshakesCompleted >= results.length, 'the insider completed a handshake for every case');
    const insiderSession = s.sessions.find((x) => x.peerAddresses.includes(`${INSIDER_ADDRESS}/32`));
    assert.equal(insiderSession?.misdirected, 1, 'the CLOSE naming another link was counted as misdirected, not obeyed');
  });

  it('3. a handshake flood from 320 addresses: the real client, reset meanwhile, is back within 3 s', async () => {
    const s0 = await fresh('server');
    const flood = tb.run(
      'attacker',
      process.execPath,
      [
        '--import',
        'tsx',
        ATTACK,
        'flood',
        JSON.stringify({
          targets: SERVER_LISTEN.map((a) => ({ host: a.split(':')[0], port: Number(a.split(':')[1]) })),
          sources: attackers,
          serverPublicKey: keys.serverPub,
          total: 2000,
          concurrency: 300,
          maxSeconds: 8,
          idleHoldMs: 3000,
        }),
      ],
      60_000,
    );
    await sleep(2500);
    const ups = [tb.linkUps('wan1'), tb.linkUps('wan2')];
    const t0 = Date.now();
    for (const dst of ['10.0.11.1', '10.0.12.1']) await tb.run('client', 'ss', ['-K', 'dst', dst]);
    await tb.timeToTunnel(5000);
    // From the reset on: the kill itself, the redial, the handshake (with cookies), the ping.
    const ms = Date.now() - t0;
    const result = JSON.parse((await flood).stdout) as Record<string, unknown> & {
      attempts: number;
      durationMs: number;
      idle: { connected: number; closedByServer: number; heldMsP50: number | null };
      garbage: { connected: number; closedByServer: number };
      initiation: { connected: number; closedByServer: number; cookies: number; responses: number };
    };
    const s1 = await fresh('server');
    const a0 = s0.server!.admission;
    const a1 = s1.server!.admission;
    const evicted = Object.values(a1.evicted).reduce((x, y) => x + y, 0) - Object.values(a0.evicted).reduce((x, y) => x + y, 0);
    console.log(
      `# flood: ${result.attempts} connections from ${attackers.length} addresses in ${result.durationMs} ms ` +
        `(idle ${result.idle.connected}, garbage ${result.garbage.connected}, INITIATIONs ${result.initiation.connected}); ` +
        `real client's links reset 2.5 s into it, tunnel back (ping answered) ${ms} ms later`,
    );
    console.log(
      `# server: evicted ${evicted} ${JSON.stringify(a1.evicted)}, cookies ${a1.cookiesSent - a0.cookiesSent}, rate-limited ${a1.rateLimited - a0.rateLimited}, ` +
        `refused ${JSON.stringify(s1.server!.refused)}; flooder got ${result.initiation.cookies} cookies, ${result.initiation.responses} RESPONSEs; idle held p50 ${result.idle.heldMsP50} ms`,
    );
    assert.ok(ms < 3000, `the real client was back in ${ms} ms`);
    assert.ok(result.attempts >= 1500, `the flood was made (${result.attempts} connections)`);
    assert.equal(result.initiation.responses, 0, 'no stranger got a RESPONSE');
    assert.ok(result.idle.closedByServer > 0 && result.garbage.closedByServer > 0 && result.initiation.closedByServer > 0, 'the server closed what the strangers held');
    assert.ok(evicted + (a1.cookiesSent - a0.cookiesSent) + (a1.rateLimited - a0.rateLimited) > 0, 'the defences were exercised');
    // Under pressure the prefix table evicts idle connections before their first-message timeout (CI once saw
    // none timed out 2.9 s in); those opened as the pressure eases live to reach it.
    assert.ok(s1.server!.refused['timeout']! > s0.server!.refused['timeout']!, 'idle connections were timed out');
    assert.ok(s1.server!.refused['unknown_peer']! + s1.server!.refused['bad_mac1']! > s0.server!.refused['unknown_peer']! + s0.server!.refused['bad_mac1']!, 'strangers refused');
    assert.ok(tb.alive('server'));
    await realUp(10_000);
    assert.ok(ups.every((u, i) => tb.linkUps(`wan${i + 1}`) > u), 'both links were redialled');
  });

  it('the whole capture of every attack above: no (receiver index, counter) sealed twice with different bytes', async () => {
    const nr = await relay.cmd<NonceReport>({ cmd: 'nonce' });
    console.log(`# whole capture: ${nr.records} sealed records, ${nr.distinct} distinct, keypairs c2s ${nr.indexes.c2s} s2c ${nr.indexes.s2c}, reused ${nr.reused.length}`);
    assert.deepEqual(nr.reused, []);
    assert.ok(nr.records > 10_000);
  });

  // Last: the insider's sessions leave state on the server (an idle session stays for sessionIdleMs).
  it('4b. an insider opening many sessions of its own: they retire each other or are refused; a restarted real client gets in', async () => {
    interface Opened {
      attempted: number;
      answered: number;
      confirmed: number;
      openedMs: number;
      aliveAtEnd: number;
      refused: Record<string, number>;
      closedWith: Record<string, number>;
    }
    const base = (local: string): Record<string, unknown> => ({
      server: { host: '10.0.22.1', port: 31413, local },
      privateKey: keys.insiderPriv,
      serverPublicKey: keys.serverPub,
    });
    const sum = (r: Record<string, number>): number => Object.values(r).reduce((a, b) => a + b, 0);
    const insiderSessions = (s: StatsSnapshot): number => s.sessions.filter((x) => x.peerAddresses.some((a) => /^10\.0\.0\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\//.test(a))).length;
    const s0 = await fresh('server');

    // (i) The original attack: sessions that name no address (they retired no one). Now refused, with the reason.
    const none = await attack<Opened>('sessions', { ...base(attackers[312]!), count: 1, addresses: [], mode: 'sequential', holdMs: 0 });
    console.log(`# an INITIATION naming no address: answered ${none.answered}, refused ${JSON.stringify(none.refused)}`);
    assert.equal(none.answered, 0, 'no RESPONSE to an INITIATION without an address');
    assert.match(Object.keys(none.refused).join(), /no tunnel address/);

    // (ii) 70 sessions (more than max_sessions, 64), one after the other, each confirmed, each on an address of its own
    // (10.0.0.65 ...: no address to retire an older one by), all kept alive. The real client restarts meanwhile.
    const addresses = Array.from({ length: 62 }, (_, i) => `10.0.0.${65 + i}`);
    // Spaced 6 ms apart: a peer may make 64 handshakes at once and one more per 50 ms (src/roles/server.ts),
    // so 70 need 300 ms; unspaced, a fast run made them in 291 ms and the 70th was refused for its rate.
    const holding = attack<Opened>('sessions', { ...base(attackers[311]!), count: 70, addresses, mode: 'sequential', holdMs: 6000, spacingMs: 6 });
    let most = 0;
    const watching = (async (): Promise<void> => {
      for (let i = 0; i < 6; i++) most = Math.max(most, insiderSessions(await fresh('server')));
    })();
    await sleep(3500);
    await tb.stopDpTcp('client', 'SIGKILL');
    tb.startDpTcp('client', clientYaml(keys));
    const ms = await tb.timeToTunnel(3000);
    const seq = await holding;
    await watching;
    console.log(
      `# insider: ${seq.confirmed} of ${seq.attempted} sessions confirmed in ${seq.openedMs} ms, ${seq.aliveAtEnd} alive at the end, ` +
        `closed by the server: ${JSON.stringify(seq.closedWith)}, refused ${JSON.stringify(seq.refused)}; most insider sessions on the server at once: ${most}`,
    );
    console.log(`# real client restarted while the insider held its sessions: tunnel back in ${ms} ms`);
    assert.equal(seq.confirmed, 70, 'the insider really confirmed all its sessions (70: more than the table holds)');
    assert.equal(seq.aliveAtEnd, 1, 'only its newest session is left');
    assert.equal(sum(seq.closedWith), 69, 'every older one was closed');
    assert.match(Object.keys(seq.closedWith).join(), /^the peer started a new session$/, 'each by the next (session retired)');
    assert.ok(most >= 1 && most <= 3, `the insider never held more than one session and two being set up (${most})`);
    assert.ok(ms < 3000, `the restarted real client got a session (${ms} ms)`);

    // (iii) Sessions being set up, all at once and never confirmed: two are answered, the rest refused.
    const pending = await attack<Opened>('sessions', { ...base(attackers[313]!), count: 6, addresses, mode: 'pending', holdMs: 3000 });
    console.log(`# insider, 6 sessions at once, none confirmed: ${pending.answered} answered, refused ${JSON.stringify(pending.refused)}, ${pending.aliveAtEnd} alive after 3 s`);
    assert.equal(pending.answered, 2, 'two sessions may be set up at once');
    assert.equal(sum(pending.refused), 4);
    assert.match(Object.keys(pending.refused).join(), /^refused: peer insider already has N sessions being set up$/);
    assert.equal(pending.aliveAtEnd, 0, 'unconfirmed handshakes time out');

    const s1 = await fresh('server');
    assert.ok(s1.server!.handshakesCompleted - s0.server!.handshakesCompleted >= 70, 'the server completed the insider\'s handshakes');
    assert.ok(insiderSessions(s1) <= 1, `at most one insider session left (${insiderSessions(s1)})`);
    assert.equal(s1.sessions.filter((x) => x.peerAddresses.some((a) => a.startsWith('10.0.0.2/'))).length, 1, 'the real client holds one session');
    assert.ok(tb.alive('server'));
    await realUp();
  });

});
