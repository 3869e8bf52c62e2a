import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PeerConfig } from '../../src/config/types.js';
import { Registry, samePeer } from '../../src/core/registry.js';
import type { Session } from '../../src/core/session.js';
import type { TunnelAddress } from '../../src/protocol/handshake.js';

const v4 = (address: string, prefix = 32): TunnelAddress => ({ family: 4, address, prefix });

function peer(name: string, fill: number, allowed: TunnelAddress[]): PeerConfig {
  return { name, publicKey: Buffer.alloc(32, fill), allowedIps: allowed } as PeerConfig;
}

let nextId = 1;
function session(...addresses: TunnelAddress[]): Session {
  const id = Buffer.alloc(16, nextId++);
  return { sessionId: id, idHex: id.toString('hex'), peerAddresses: addresses } as unknown as Session;
}

/** An IPv4 header whose destination is `dst`, at offset 0. */
function packetTo(dst: string): Buffer {
  const p = Buffer.alloc(20);
  p[0] = 0x45;
  dst.split('.').forEach((o, i) => (p[16 + i] = Number(o)));
  return p;
}

describe('Registry', () => {
  it('sole: the one confirmed session and exactly the prefixes that lead to it (the native send path routes by them)', () => {
    const r = new Registry();
    const c1 = session(v4('10.0.0.2'));
    const c2 = session(v4('10.0.0.3'));
    const c3 = session(v4('10.0.0.2'), v4('10.0.0.3'));
    r.add(c1, undefined);
    assert.equal(r.sole(), undefined, 'none confirmed');
    r.confirm(c1, [v4('10.0.0.2')]);
    assert.deepEqual(r.sole(), { session: c1, prefixes: [v4('10.0.0.2')] });
    r.add(c2, undefined);
    assert.equal(r.sole()?.session, c1, 'an unconfirmed one routes nothing');
    r.confirm(c2, [v4('10.0.0.3')]);
    assert.equal(r.sole(), undefined, 'two confirmed');
    // A third takes over both addresses; the first goes; then the third: 10.0.0.3 led to the
    // third and went with it, so the second, sole again, routes nothing there (as route() says).
    r.add(c3, undefined);
    r.confirm(c3, [v4('10.0.0.2'), v4('10.0.0.3')]);
    r.remove(c1);
    r.remove(c3);
    assert.equal(r.route(packetTo('10.0.0.3'), 0), undefined);
    assert.deepEqual(r.sole(), { session: c2, prefixes: [] });
  });

  it('an unconfirmed session holds no address and routes nothing', () => {
    const r = new Registry();
    const alice = peer('alice', 1, [v4('10.0.0.2')]);
    const s = session(v4('10.0.0.2'));
    r.add(s, alice);
    assert.equal(r.find(alice, s.sessionId), s, 'found by peer and session id');
    assert.equal(r.isConfirmed(s), false, 'not confirmed yet');
    assert.equal(r.holder([v4('10.0.0.2')]), undefined, 'holds no address before confirmation');
    assert.equal(r.route(packetTo('10.0.0.2'), 0), undefined, 'routes nothing before confirmation');
    assert.equal(r.unconfirmedOf(alice), 1, 'counted as being set up');
    r.confirm(s, alice.allowedIps);
    assert.equal(r.isConfirmed(s), true, 'confirmed');
    assert.equal(r.holder([v4('10.0.0.2')]), s, 'holds its address');
    assert.equal(r.route(packetTo('10.0.0.2'), 0), s, 'receives its traffic');
    assert.equal(r.unconfirmedOf(alice), 0, 'no longer being set up');
  });

  it('routes by the longest prefix, and a re-confirm replaces the routes', () => {
    const r = new Registry();
    const site = peer('site', 1, [v4('10.1.0.0', 16)]);
    const host = peer('host', 2, [v4('10.1.2.3')]);
    const a = session(v4('10.1.0.1'));
    const b = session(v4('10.1.2.3'));
    r.add(a, site);
    r.add(b, host);
    r.confirm(a, site.allowedIps);
    r.confirm(b, host.allowedIps);
    assert.equal(r.route(packetTo('10.1.2.3'), 0), b, 'the /32 wins over the /16');
    assert.equal(r.route(packetTo('10.1.9.9'), 0), a, 'the /16 takes the rest');
    assert.equal(r.route(packetTo('10.2.0.1'), 0), undefined, 'outside every prefix: no session');
    r.confirm(a, [v4('10.3.0.0', 16)]);
    assert.equal(r.route(packetTo('10.1.9.9'), 0), undefined, 'the old route is gone');
    assert.equal(r.route(packetTo('10.3.0.1'), 0), a, 'the new route is there');
  });

  it('remove forgets the session everywhere but leaves a newer holder of its address', () => {
    const r = new Registry();
    const alice = peer('alice', 1, [v4('10.0.0.2')]);
    const old = session(v4('10.0.0.2'));
    const next = session(v4('10.0.0.2'));
    r.add(old, alice);
    r.confirm(old, alice.allowedIps);
    r.add(next, alice);
    r.confirm(next, alice.allowedIps);
    assert.deepEqual(r.sessionsOf(alice), [old, next], 'both sessions belong to alice');
    r.remove(old);
    assert.equal(r.holder([v4('10.0.0.2')]), next, 'the newer session keeps the address');
    assert.equal(r.route(packetTo('10.0.0.2'), 0), next, 'and its route');
    assert.equal(r.find(alice, old.sessionId), undefined, 'the old one is not found');
    assert.equal(r.size, 1, 'one session left');
    r.remove(next);
    assert.equal(r.size, 0, 'none left');
    assert.equal(r.route(packetTo('10.0.0.2'), 0), undefined, 'no route left');
  });

  it('peers are the same by key across a reload, and listed with their confirmed session', () => {
    const r = new Registry();
    const alice = peer('alice', 1, [v4('10.0.0.2')]);
    const aliceReloaded = peer('alice-laptop', 1, [v4('10.0.0.2')]);
    const bob = peer('bob', 2, [v4('10.0.0.3')]);
    assert.ok(samePeer(alice, aliceReloaded), 'same key: same peer');
    assert.ok(!samePeer(alice, bob), 'another key: another peer');
    assert.ok(samePeer(undefined, undefined), 'the anonymous peer is itself');
    r.peers = new Map([
      ['a', alice],
      ['b', bob],
    ]);
    const s = session(v4('10.0.0.2'));
    r.add(s, alice);
    assert.deepEqual(
      r.listPeers().map((p) => [p.name, p.session]),
      [
        ['alice', null],
        ['bob', null],
      ],
      'no confirmed session yet',
    );
    r.confirm(s, alice.allowedIps);
    r.setPeer(s, aliceReloaded);
    assert.equal(r.peerOf(s), aliceReloaded, 'the session follows the reloaded config');
    assert.equal(r.find(aliceReloaded, s.sessionId), s, 'still found under the same key');
    assert.deepEqual(r.listPeers()[0], { name: 'alice', key: Buffer.alloc(32, 1).toString('base64').slice(0, 8), allowedIps: ['10.0.0.2/32'], session: s.idHex }, 'listed with its session');
  });
});
