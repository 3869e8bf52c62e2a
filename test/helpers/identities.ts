// A server and a client identity in the peer-key form, as the config would
// make them: for the handshake's unit tests, the fuzzer and the handshake benchmark.
import type { PeerConfig, SecurityConfig } from '../../src/config/types.js';
import { identityOf, type Identity } from '../../src/secure/handshake.js';
import { generateKeyPair, type KeyPair } from '../../src/secure/primitives.js';

export const KEYS_BASE: SecurityConfig = Object.freeze({
  mode: 'keys',
  privateKey: undefined,
  psk: undefined,
  encryption: 'chacha20-poly1305',
  serverPublicKey: undefined,
  peers: [],
});

export interface KeyedPair {
  readonly server: KeyPair;
  readonly client: KeyPair;
  readonly serverId: Identity;
  readonly clientId: Identity;
}

/** A server that lists one client (`allowedIps`, default: any address of its network) and that client. */
export function keyedPair(allowedIps: PeerConfig['allowedIps'] = [], name = 'c'): KeyedPair {
  const server = generateKeyPair();
  const client = generateKeyPair();
  const serverId = identityOf({ ...KEYS_BASE, privateKey: server.privateKey, peers: [{ name, publicKey: client.publicKey, allowedIps }] }, 'server') as Identity;
  const clientId = identityOf({ ...KEYS_BASE, privateKey: client.privateKey, serverPublicKey: server.publicKey }, 'client') as Identity;
  return { server, client, serverId, clientId };
}
