// The tunnel core end to end over loopback TCP, with fake TUN devices.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { afterEach, describe, it } from 'node:test';
import { encodeData } from '../../src/protocol/frame.js';
import type { ClientRole } from '../../src/roles/client.js';
import type { ServerRole } from '../../src/roles/server.js';
import { FAST_TIMING, startClient, startServer, stop, until, type Side } from '../helpers/harness.js';
import { ipv6Udp, numbered, packetNumber } from '../helpers/packets.js';

let server: Side<ServerRole> | undefined;
let client: Side<ClientRole> | undefined;
let client2: Side<ClientRole> | undefined;

afterEach(() => {
  stop(client, client2, server);
  client = client2 = server = undefined;
});

const upLinks = (c: Side<ClientRole>): number => c.role.session.upLinks().length;
const serverSession = (s: Side<ServerRole>) => [...s.tunnel.sessions][0];

async function pair(): Promise<{ s: Side<ServerRole>; c: Side<ClientRole> }> {
  server = await startServer(2);
  client = startClient(server);
  await until(() => upLinks(client!) === 2 && serverSession(server!)?.upLinks().length === 2, 'both links up');
  return { s: server, c: client };
}

/** A pair whose client had every link torn down after packet 0, then was given packets 1..count by its TUN. */
async function heldWhileDown(count: number): Promise<{ s: Side<ServerRole>; c: Side<ClientRole> }> {
  const p = await pair();
  p.c.tun.inject([numbered(0)]);
  await p.s.tun.waitFor(1);
  for (const l of p.c.role.session.links.values()) l.socket.destroy();
  await until(() => upLinks(p.c) === 0, 'every link down');
  p.c.tun.inject(Array.from({ length: count }, (_, i) => numbered(1 + i)));
  return p;
}

describe('tunnel core over loopback (fake TUN)', () => {
  it('delivers every packet exactly once, in order, both directions, on two links', async () => {
    const { s, c } = await pair();
    const n = 2000;
    for (let i = 0; i < n; i += 50) c.tun.inject(Array.from({ length: 50 }, (_, j) => numbered(i + j)));
    for (let i = 0; i < n; i += 50) s.tun.inject(Array.from({ length: 50 }, (_, j) => numbered(i + j, '10.0.0.1', '10.0.0.2')));
    await s.tun.waitFor(n);
    await c.tun.waitFor(n);
    await new Promise((r) => setTimeout(r, 100)); // let any stray copy arrive
    assert.deepEqual(s.tun.written.map(packetNumber), Array.from({ length: n }, (_, i) => i));
    assert.deepEqual(c.tun.written.map(packetNumber), Array.from({ length: n }, (_, i) => i));
    const ss = serverSession(s)!;
    assert.equal(ss.eliminator.accepted, n);
    assert.equal(ss.eliminator.duplicates + ss.eliminator.stale, n, 'the second copy of each was eliminated');
    for (const l of c.role.session.links.values()) assert.equal(l.stats.txPackets, n, `${l.name} carried every packet`);
  });

  it('carries IPv6 packets unchanged', async () => {
    const { s, c } = await pair();
    const p = ipv6Udp('fd0000dd000000000000000000000002', 'fd0000dd000000000000000000000001', Buffer.from('hello v6'));
    c.tun.inject([p]);
    await s.tun.waitFor(1);
    assert.deepEqual(s.tun.written[0], p);
  });

  it('delivers a packet the host sent twice, twice', async () => {
    const { s, c } = await pair();
    const p = numbered(7);
    c.tun.inject([p, p]);
    c.tun.inject([p]);
    await s.tun.waitFor(3);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(s.tun.written.length, 3);
    assert.ok(s.tun.written.every((w) => w.equals(p)));
  });

  it('loses nothing when one link dies mid-stream, and redials it', async () => {
    const { s, c } = await pair();
    const n = 3000;
    let sent = 0;
    const killAt = 1000;
    while (sent < n) {
      c.tun.inject(Array.from({ length: 20 }, (_, j) => numbered(sent + j)));
      sent += 20;
      if (sent === killAt) c.role.session.links.get(0)!.socket.destroy();
      if (sent % 200 === 0) await new Promise((r) => setImmediate(r));
    }
    await s.tun.waitFor(n);
    assert.deepEqual(s.tun.written.map(packetNumber), Array.from({ length: n }, (_, i) => i));
    await until(() => upLinks(c) === 2, 'link 0 redialled');
    assert.ok(c.log.lines.some((l) => /link down/.test(l)), 'the loss was logged');
  });

  it('holds what the TUN gives while no link is up and sends it, in order, once one is', async () => {
    const { s, c } = await heldWhileDown(50);
    await until(() => upLinks(c) > 0, 'a link redialled');
    c.tun.inject([numbered(51)]);
    await s.tun.waitFor(52);
    assert.deepEqual(s.tun.written.map(packetNumber), Array.from({ length: 52 }, (_, i) => i));
    assert.equal(c.role.session.stats.dropsNoLink, 0, 'none dropped');
  });

  it('sends what it held as soon as a link is up, with no packet from the TUN after it', async () => {
    const { s, c } = await heldWhileDown(20);
    // Nothing more comes from the TUN: the link coming up is what lets them go.
    await s.tun.waitFor(21);
    assert.deepEqual(s.tun.written.map(packetNumber), Array.from({ length: 21 }, (_, i) => i));
    assert.equal(c.role.session.stats.dropsNoLink, 0, 'none dropped');
  });

  it('closes a link that goes silent and brings it back', async () => {
    const { c } = await pair();
    const link = c.role.session.links.get(1)!;
    link.pauseReading(); // no frame (not even PONG) is read: the server side looks dead
    await until(() => link.state === 'closed', 'silent link closed', 3000);
    await until(() => upLinks(c) === 2, 'link redialled');
  });

  it('tears a link that is dead in one direction down on both sides (LINKDOWN) and redials it', async () => {
    const { s, c } = await pair();
    const clientLink = c.role.session.links.get(1)!;
    const serverLink = serverSession(s)!.links.get(1)!;
    // The client hears nothing on link 1 while the server still hears the client's PINGs.
    clientLink.pauseReading();
    await until(() => clientLink.state === 'closed' && serverLink.state === 'closed', 'both ends closed link 1', 3000);
    assert.ok(clientLink.declaredDead, 'the client declared it dead');
    await until(() => upLinks(c) === 2 && serverSession(s)!.upLinks().length === 2, 'link 1 redialled');
    c.tun.inject([numbered(1)]);
    await s.tun.waitFor(1);
  });

  it('gives a restarted client a fresh session at once and retires the old one', async () => {
    const { s, c } = await pair();
    c.tun.inject([numbered(1)]);
    await s.tun.waitFor(1);
    const oldId = c.role.session.idHex;
    // The old process vanishes without saying goodbye; its sockets stay open.
    client2 = startClient(s);
    await until(() => upLinks(client2!) === 2, 'new client up');
    await until(() => s.tunnel.sessions.size === 1 && serverSession(s)!.idHex !== oldId, 'old session retired');
    client2.tun.inject([numbered(2)]);
    await s.tun.waitFor(2);
    assert.equal(packetNumber(s.tun.written[1]!), 2);
    s.tun.inject([numbered(3, '10.0.0.1', '10.0.0.2')]);
    await client2.tun.waitFor(1);
  });

  it('finds a restarted server again and resets its receive sequence', async () => {
    const { s, c } = await pair();
    s.tun.inject([numbered(1, '10.0.0.1', '10.0.0.2'), numbered(2, '10.0.0.1', '10.0.0.2')]);
    await c.tun.waitFor(2);
    const ports = s.role.listening().map((l) => l.port);
    stop(s);
    server = undefined;
    // A new server on the same ports: new epoch, sequence numbers start at 1 again.
    server = await startServer(2, undefined, undefined, ports);
    const fresh = server;
    await until(() => serverSession(fresh)?.upLinks().length === 2 && upLinks(c) === 2, 'client back on the new server');
    server.tun.inject([numbered(3, '10.0.0.1', '10.0.0.2')]);
    await c.tun.waitFor(3);
    assert.equal(packetNumber(c.tun.written[2]!), 3);
  });

  it('serves two clients at once, routing each packet to the session of its destination', async () => {
    const { s, c } = await pair();
    client2 = startClient(s, undefined, '10.0.0.3');
    await until(() => client2!.role.session.upLinks().length === 2 && s.tunnel.sessions.size === 2, 'second client up');
    s.tun.inject([numbered(1, '10.0.0.1', '10.0.0.2'), numbered(2, '10.0.0.1', '10.0.0.3'), numbered(3, '10.0.0.1', '10.0.0.9')]);
    await c.tun.waitFor(1);
    await client2.tun.waitFor(1);
    assert.equal(packetNumber(c.tun.written[0]!), 1);
    assert.equal(packetNumber(client2.tun.written[0]!), 2);
    assert.equal(s.tunnel.stats.dropsNoSession, 1, 'a packet for nobody is dropped and counted');
    client2.tun.inject([numbered(4, '10.0.0.3', '10.0.0.1')]);
    c.tun.inject([numbered(5, '10.0.0.2', '10.0.0.1')]);
    await s.tun.waitFor(2);
  });

  it('routes batch after batch whatever their mix: each client gets its own packets, once, in order', async () => {
    // The server gathers each session's frames of a batch in arrays it reuses batch after batch. Here
    // batches interleave two clients (one view per packet), then come whole for one of them (one view),
    // then empty for the other: a view left over from an earlier batch (which FakeTun scribbles over)
    // or a count not reset would show as a packet lost, repeated or garbled.
    const { s, c } = await pair();
    client2 = startClient(s, undefined, '10.0.0.3');
    await until(() => client2!.role.session.upLinks().length === 2 && s.tunnel.sessions.size === 2, 'second client up');
    const to = (n: number, dst: string): Buffer => numbered(n, '10.0.0.1', dst);
    const want2: number[] = [];
    const want3: number[] = [];
    let n = 0;
    for (let round = 0; round < 20; round++) {
      const mixed: Buffer[] = [];
      for (let i = 0; i < 6; i++, n++) {
        const dst = i % 2 === 0 ? '10.0.0.2' : '10.0.0.3';
        mixed.push(to(n, dst));
        (dst === '10.0.0.2' ? want2 : want3).push(n);
      }
      s.tun.inject(mixed);
      const whole: Buffer[] = [];
      for (let i = 0; i < 1 + (round % 3); i++, n++) {
        whole.push(to(n, '10.0.0.2'));
        want2.push(n);
      }
      s.tun.inject(whole);
    }
    await c.tun.waitFor(want2.length);
    await client2.tun.waitFor(want3.length);
    await new Promise((r) => setTimeout(r, 100)); // let any stray copy arrive
    assert.deepEqual(c.tun.written.map(packetNumber), want2);
    assert.deepEqual(client2.tun.written.map(packetNumber), want3);
  });

  it('closes a stranger that sends garbage, and the tunnel carries on', async () => {
    const { s, c } = await pair();
    const port = s.role.listening()[0]!.port;
    const stranger = connect({ host: '127.0.0.1', port });
    const closed = new Promise<void>((r) => stranger.on('close', () => r()));
    stranger.on('error', () => {});
    stranger.resume();
    stranger.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await closed;
    assert.ok(s.log.lines.some((l) => /protocol error/.test(l)), 'the reason was logged');
    c.tun.inject([numbered(1)]);
    await s.tun.waitFor(1);
  });

  it('refuses DATA before HELLO', async () => {
    const { s } = await pair();
    const port = s.role.listening()[1]!.port;
    const stranger = connect({ host: '127.0.0.1', port });
    stranger.on('error', () => {});
    stranger.resume();
    const closed = new Promise<void>((r) => stranger.on('close', () => r()));
    stranger.write(encodeData(1, numbered(99)));
    await closed;
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(s.tun.written.length, 0);
    assert.ok(s.log.lines.some((l) => /expected HELLO/.test(l)));
  });

  it('keeps a slow link from blocking the others: its queue is bounded and drops are counted', async () => {
    const { s, c } = await pair();
    const slow = c.role.session.links.get(0)!;
    // The server stops reading link 0, so its socket and then our queue fill up.
    const serverLink = serverSession(s)!.links.get(0)!;
    serverLink.pauseReading();
    const n = 30_000;
    for (let i = 0; i < n; i += 100) {
      c.tun.inject(Array.from({ length: 100 }, (_, j) => numbered(i + j, '10.0.0.2', '10.0.0.1', 1200)));
      // Paced by the healthy link: whatever the slow one does must not hold it back.
      await s.tun.waitFor(i + 100);
    }
    await s.tun.waitFor(n, 10_000);
    assert.deepEqual(s.tun.written.map(packetNumber), Array.from({ length: n }, (_, i) => i));
    const drops = slow.stats.drops.queue_full + slow.stats.drops.queue_age;
    assert.ok(drops > 0, 'the slow link dropped copies');
    assert.ok(slow.queueBytes <= FAST_QUEUE_BYTES, `queue bounded: ${slow.queueBytes}`);
  });

  it('waits for a TUN that pushes back (EAGAIN) and keeps order', async () => {
    const { s, c } = await pair();
    s.tun.eagainWrites = 3;
    for (let i = 0; i < 100; i += 10) c.tun.inject(Array.from({ length: 10 }, (_, j) => numbered(i + j)));
    await s.tun.waitFor(100);
    assert.deepEqual(s.tun.written.map(packetNumber), Array.from({ length: 100 }, (_, i) => i));
  });
});

const FAST_QUEUE_BYTES = FAST_TIMING.queueMaxBytes;
