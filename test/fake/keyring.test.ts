// A session's keypair ring on the server: every connection of a client
// reconnecting at once (an outage of all its links) must not push out the
// keypairs the just-joined links wait on. With a ring smaller than the
// connections, or older confirmed keypairs kept ahead of new unconfirmed ones,
// such links stayed pending: the client had them up, the server dropped their
// records as unknown_key / pending_link until the client declared them dead.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PeerConfig } from '../../src/config/types.js';
import { generateKeyPair } from '../../src/secure/primitives.js';
import { clientKeys, dialClient, FAST_TIMING, serverKeys, startServer, stop, until } from '../helpers/harness.js';

const SERVER = generateKeyPair();
const ALICE = generateKeyPair();
const PEERS: PeerConfig[] = [{ name: 'alice', publicKey: ALICE.publicKey, allowedIps: [{ family: 4, address: '10.0.0.2', prefix: 32 }, { family: 6, address: 'fd00:dd::2', prefix: 128 }] }];

describe('keypair ring under reconnects', () => {
  it('16 connections (the most a session may have) all reconnecting at once, twice: every one back, no record for an unknown key', async () => {
    const N = 16;
    const timing = { ...FAST_TIMING, handshakeTimeoutMs: 4000 };
    const server = await startServer(1, timing, serverKeys(SERVER.privateKey, PEERS));
    const port = (server.role.listening()[0] as { port: number }).port;
    const c = dialClient(Array(N).fill(port), timing, '10.0.0.2', clientKeys(ALICE.privateKey, SERVER.publicKey), 'duplicate', Array(N).fill(0));
    try {
      const session = () => [...server.tunnel.sessions][0];
      await until(() => session()?.upLinks().length === N, 'all up on the server', 5000);
      const s = session();
      assert.ok(s?.keys);
      const before = { unknown: s.stats.records.unknown_key, pending: s.stats.records.pending_link };
      for (let round = 0; round < 2; round++) {
        for (const l of s.upLinks()) l.socket.destroy();
        await new Promise((r) => setTimeout(r, 50));
        await until(() => s.upLinks().length === N, `all ${N} up again (round ${round + 1})`, 5000);
      }
      assert.equal(s.stats.records.unknown_key - before.unknown, 0, 'no record under a keypair the ring had dropped');
      assert.equal(s.stats.records.pending_link - before.pending, 0, 'no record on a link left pending');
    } finally {
      stop(c, server);
    }
  });
});
