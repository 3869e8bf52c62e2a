// wireguard-go (the userspace WireGuard) over link 1 of the testbed, the
// comparison `npm run bench` runs beside OpenVPN: one UDP path, its only
// cipher (ChaCha20-Poly1305), point-to-point 10.9.0.1 (server) <-> 10.9.0.2
// (client). The processes belong to the testbed (killed by its destroy()).
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateKeyPair } from '../../src/secure/primitives.js';
import type { Testbed } from './netns.js';

export const WIREGUARD_SERVER = '10.9.0.1';
// Its control socket (/var/run/wireguard/NAME.sock) is not per namespace: each side its own name.
const DEVICE = { server: 'wgbs0', client: 'wgbc0' } as const;
const PORT = 51820;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Starts both ends in the foreground and configures them with `wg` and `ip`; ping 10.9.0.1 before use. */
export async function startWireGuardGo(tb: Testbed): Promise<ChildProcess[]> {
  const keys = { server: generateKeyPair(), client: generateKeyPair() };
  const procs: ChildProcess[] = [];
  for (const side of ['server', 'client'] as const) {
    procs.push(tb.spawn(side, 'wireguard-go', ['-f', DEVICE[side]], { stdout: join(tb.dir, `wireguard-go-${side}.log`) }));
  }
  for (const side of ['server', 'client'] as const) {
    const peer = side === 'server' ? 'client' : 'server';
    const own = keys[side];
    const keyFile = join(tb.dir, `wg-${side}.key`);
    writeFileSync(keyFile, own.privateKey.toString('base64') + '\n', { mode: 0o600 });
    // The device appears once wireguard-go has opened its TUN.
    for (let i = 0; ; i++) {
      const up = await tb.run(side, 'ip', ['link', 'show', DEVICE[side]]).then(() => true, () => false);
      if (up) break;
      if (i >= 100) throw new Error(`wireguard-go made no ${DEVICE[side]} in the ${side} namespace`);
      await sleep(50);
    }
    const n = side === 'server' ? 1 : 2;
    const peerAddr = side === 'server' ? '10.0.1.2' : '10.0.1.1';
    await tb.run(side, 'wg', [
      'set', DEVICE[side], 'private-key', keyFile, 'listen-port', String(PORT),
      'peer', keys[peer].publicKey.toString('base64'), 'allowed-ips', `10.9.0.${3 - n}/32`, 'endpoint', `${peerAddr}:${PORT}`,
    ]);
    await tb.run(side, 'ip', ['addr', 'add', `10.9.0.${n}/24`, 'dev', DEVICE[side]]);
    await tb.run(side, 'ip', ['link', 'set', DEVICE[side], 'up']);
  }
  return procs;
}
