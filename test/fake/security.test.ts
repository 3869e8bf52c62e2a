// Authentication, encryption, anti-spoofing and hostile peers, against the
// real server and client roles over loopback (fake TUN devices).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { afterEach, describe, it } from 'node:test';
import type { SecurityConfig } from '../../src/config/types.js';
import { clientProof, newNonce, sessionKey } from '../../src/protocol/auth.js';
import { encodeData, FRAME_HEADER_BYTES, FrameDecoder, FrameType, encodeFrame } from '../../src/protocol/frame.js';
import { decodeChallenge, decodeWelcome, encodeAuth, encodeHello } from '../../src/protocol/handshake.js';
import { Sealer } from '../../src/protocol/seal.js';
import type { ClientRole } from '../../src/roles/client.js';
import type { ServerRole } from '../../src/roles/server.js';
import { startClient, startServer, stop, until, type Side } from '../helpers/harness.js';
import { numbered } from '../helpers/packets.js';

const PSK = Buffer.from('correct horse battery staple, twice over');
const WITH_KEY: SecurityConfig = { psk: PSK, encryption: 'chacha20-poly1305' };
const AUTH_ONLY: SecurityConfig = { psk: PSK, encryption: 'none' };

let server: Side<ServerRole> | undefined;
let client: Side<ClientRole> | undefined;
const sockets: Socket[] = [];

afterEach(() => {
  stop(client, server);
  client = server = undefined;
  for (const s of sockets.splice(0)) s.destroy();
});

/** A hand-made client speaking the protocol frame by frame. */
class RawPeer {
  readonly frames: Array<{ type: number; body: Buffer }> = [];
  readonly sock: Socket;
  closed = false;
  private readonly decoder = new FrameDecoder(1 << 20, (type, buf, s, e) =>
    this.frames.push({ type, body: Buffer.from(buf.subarray(s, e)) }),
  );

  constructor(port: number) {
    this.sock = connect({ host: '127.0.0.1', port });
    sockets.push(this.sock);
    this.sock.on('data', (d: Buffer) => this.decoder.push(d));
    this.sock.on('error', () => {});
    this.sock.on('close', () => (this.closed = true));
  }

  async next(type: number): Promise<Buffer> {
    await until(() => this.frames.some((f) => f.type === type) || this.closed, `frame ${type}`);
    const f = this.frames.find((x) => x.type === type);
    if (!f) throw new Error(`connection closed before frame ${type}`);
    return f.body;
  }
}

function hello(sessionId = randomBytes(16), auth = true, encryption: 'none' | 'chacha20-poly1305' = 'chacha20-poly1305'): Buffer {
  return encodeHello({
    sessionId,
    nonce: newNonce(),
    auth,
    encryption,
    offload: false,
    linkId: 0,
    linkCount: 1,
    addresses: [{ family: 4, address: '10.0.0.7', prefix: 24 }],
  });
}

describe('security (fake TUN, loopback)', () => {
  it('an authenticated, encrypted tunnel carries traffic both ways', async () => {
    server = await startServer(2, undefined, WITH_KEY);
    client = startClient(server, undefined, '10.0.0.2', undefined, WITH_KEY);
    await until(() => client!.role.session.upLinks().length === 2, 'links up');
    assert.ok(client.role.session.encrypted);
    for (let i = 0; i < 10; i++) client.tun.inject([numbered(i), numbered(100 + i)]);
    server.tun.inject([numbered(1, '10.0.0.1', '10.0.0.2')]);
    await server.tun.waitFor(20);
    await client.tun.waitFor(1);
    const s = [...server.tunnel.sessions][0]!;
    assert.ok(s.encrypted);
    assert.equal(s.eliminator.accepted, 20);
    // A full batch of MTU-sized packets is more than one record may hold: it is split, not refused.
    client.tun.inject(Array.from({ length: 64 }, (_, i) => numbered(1000 + i, '10.0.0.2', '10.0.0.1', 1400)));
    await server.tun.waitFor(84);
    assert.equal(client.role.session.upLinks().length, 2, 'no link was closed');
  });

  it('a client with the wrong key is refused and says why in its log', async () => {
    server = await startServer(1, undefined, WITH_KEY);
    client = startClient(server, undefined, '10.0.0.2', undefined, { psk: Buffer.from('not the right key at all!!'), encryption: 'chacha20-poly1305' });
    await until(() => client!.log.lines.some((l) => /keys differ/.test(l)), 'client error', 3000);
    assert.equal(server.tunnel.sessions.size, 0, 'no session was created');
    assert.equal(client.role.session.upLinks().length, 0);
  });

  it('a client without a key, or a server without one, is refused with a clear reason', async () => {
    server = await startServer(1, undefined, WITH_KEY);
    client = startClient(server);
    await until(() => client!.log.lines.some((l) => /requires a pre-shared key/.test(l)), 'refusal logged', 3000);
    stop(client, server);
    server = await startServer(1);
    client = startClient(server, undefined, '10.0.0.2', undefined, WITH_KEY);
    await until(() => client!.log.lines.some((l) => /no pre-shared key configured/.test(l)), 'refusal logged', 3000);
    stop(client, server);
    server = await startServer(1, undefined, WITH_KEY);
    client = startClient(server, undefined, '10.0.0.2', undefined, AUTH_ONLY);
    await until(() => client!.log.lines.some((l) => /encryption mismatch/.test(l)), 'refusal logged', 3000);
  });

  it('a replayed handshake gets nothing: the server nonce is fresh', async () => {
    server = await startServer(1, undefined, AUTH_ONLY);
    const port = server.role.listening()[0]!.port;
    const h = hello(randomBytes(16), true, 'none');
    const real = new RawPeer(port);
    real.sock.write(h);
    const ch = decodeChallenge(await real.next(FrameType.Challenge), 0, 48);
    const auth = encodeAuth(clientProof(PSK, h.subarray(FRAME_HEADER_BYTES), ch.nonce, ch.mac));
    real.sock.write(auth);
    await real.next(FrameType.Welcome); // the genuine handshake works
    const replay = new RawPeer(port);
    replay.sock.write(Buffer.concat([h, auth]));
    await until(() => replay.closed, 'replayed connection closed');
    assert.ok(replay.frames.every((f) => f.type !== FrameType.Welcome), 'no WELCOME for the replay');
    assert.ok(server.log.lines.some((l) => /authentication failed/.test(l)));
  });

  it('nothing a stranger sends before authenticating is processed', async () => {
    server = await startServer(1, undefined, AUTH_ONLY);
    const port = server.role.listening()[0]!.port;
    const p = new RawPeer(port);
    p.sock.write(Buffer.concat([hello(randomBytes(16), true, 'none'), encodeData(1, numbered(5))]));
    await until(() => p.closed, 'closed');
    assert.equal(server.tun.written.length, 0);
    // Large frames are refused before the handshake, whatever the configured maximum.
    const big = new RawPeer(port);
    big.sock.write(encodeFrame(FrameType.Hello, Buffer.alloc(4000)));
    await until(() => big.closed, 'closed');
    assert.ok(server.log.lines.some((l) => /exceeds the maximum of 1024/.test(l)));
  });

  it('a tampered SEALED frame closes the link and is counted; the tunnel keeps working', async () => {
    server = await startServer(1, undefined, WITH_KEY);
    const port = server.role.listening()[0]!.port;
    const sessionId = randomBytes(16);
    const h = hello(sessionId);
    const p = new RawPeer(port);
    p.sock.write(h);
    const ch = decodeChallenge(await p.next(FrameType.Challenge), 0, 48);
    p.sock.write(encodeAuth(clientProof(PSK, h.subarray(FRAME_HEADER_BYTES), ch.nonce, ch.mac)));
    const w = decodeWelcome(await p.next(FrameType.Welcome), 0, 10);
    const sealer = new Sealer('chacha20-poly1305', sessionKey(PSK, sessionId, w.epoch, 'c2s'));
    p.sock.write(sealer.seal(encodeData(1, numbered(1, '10.0.0.7'))));
    await until(() => server!.tun.written.length === 1, 'a genuine sealed packet delivered');
    const bad = sealer.seal(encodeData(2, numbered(2, '10.0.0.7')));
    bad[bad.length - 20] = (bad[bad.length - 20] as number) ^ 0x01;
    p.sock.write(bad);
    await until(() => p.closed, 'link closed');
    const s = [...server.tunnel.sessions][0]!;
    assert.equal(s.stats.tampered, 1);
    assert.equal(server.tun.written.length, 1, 'the tampered packet was not delivered');
  });

  it('drops packets whose source is not the client tunnel address (anti-spoofing)', async () => {
    server = await startServer(2);
    client = startClient(server);
    await until(() => client!.role.session.upLinks().length === 2, 'links up');
    client.tun.inject([numbered(1, '10.0.0.2'), numbered(2, '10.0.0.99'), numbered(3, '10.0.0.1'), numbered(4, '10.0.0.2')]);
    await server.tun.waitFor(2);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(server.tun.written.length, 2);
    assert.equal([...server.tunnel.sessions][0]!.stats.dropsSpoofed, 2);
  });

  it('refuses a client whose offload setting differs, saying so', async () => {
    server = await startServer(1);
    const p = new RawPeer(server.role.listening()[0]!.port);
    const h = encodeHello({
      sessionId: randomBytes(16),
      nonce: newNonce(),
      auth: false,
      encryption: 'none',
      offload: true,
      linkId: 0,
      linkCount: 1,
      addresses: [{ family: 4, address: '10.0.0.7', prefix: 24 }],
    });
    p.sock.write(h);
    const close = await p.next(FrameType.Close);
    assert.match(close.subarray(2).toString(), /offload mismatch: the server has offload off, the client on/);
  });

  it('refuses a client claiming an address outside the server tunnel network', async () => {
    server = await startServer(1);
    client = startClient(server, undefined, '192.0.2.5');
    await until(() => server!.log.lines.some((l) => /not a client address of this server/.test(l)), 'refused', 3000);
    assert.equal(server.tunnel.sessions.size, 0);
  });

  it('bounds sessions and handshakes in progress', async () => {
    server = await startServer(1, undefined, undefined, [], { maxSessions: 1, maxPending: 2 });
    client = startClient(server);
    await until(() => client!.role.session.upLinks().length === 1, 'first client up');
    const port = server.role.listening()[0]!.port;
    const other = new RawPeer(port);
    other.sock.write(hello(randomBytes(16), false, 'none'));
    const close = await other.next(FrameType.Close);
    assert.match(close.subarray(2).toString(), /the server is full \(1 sessions\)/);
    // Idle connections that never finish a handshake: at most 2 are held.
    const idle = [new RawPeer(port), new RawPeer(port), new RawPeer(port)];
    await until(() => idle[2]!.closed, 'third idle connection closed at once');
    assert.equal(server.role.stats.pendingFull, 1);
    assert.ok(!idle[0]!.closed && !idle[1]!.closed);
  });

  it('rate-limits an address after repeated failed handshakes', async () => {
    server = await startServer(1, undefined, AUTH_ONLY);
    const port = server.role.listening()[0]!.port;
    for (let i = 0; i < 12; i++) {
      const p = new RawPeer(port);
      p.sock.write(Buffer.from('garbage garbage garbage'));
      await until(() => p.closed, 'closed');
    }
    assert.ok(server.role.stats.rateLimited > 0, 'later attempts were cut off at once');
    assert.ok(server.log.lines.some((l) => /too many failed handshakes/.test(l)));
  });
});
