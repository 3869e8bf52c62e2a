// Handshakes per second of the keyed handshake (Noise IKpsk2 with mac1), on
// one core: the server's share (check mac1, read INITIATION, answer) and a
// whole handshake (both sides). `npm run bench:handshake`; `npm run bench`
// includes it.
import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { FRAME_HEADER_BYTES } from '../src/protocol/frame.js';
import { Initiator, Responder } from '../src/secure/handshake.js';
import { keyedPair } from '../test/helpers/identities.js';

export interface HandshakeRate {
  /** Server side only: mac1, INITIATION read (2 DH), RESPONSE written (3 DH). */
  serverPerSecond: number;
  /** Both sides: a whole handshake, as a client and a server on one core would do it. */
  wholePerSecond: number;
}

export function measureHandshakes(seconds = 2): HandshakeRate {
  const { serverId: sid, clientId: cid } = keyedPair();
  const responder = new Responder(sid);
  const source = Buffer.from([10, 0, 1, 2]);
  const intro = { sessionId: randomBytes(16), encryption: 'chacha20-poly1305' as const, offload: true, mode: 'duplicate' as const, linkId: 0, linkCount: 2, addresses: [{ family: 4 as const, address: '10.0.0.2', prefix: 24 }] };
  const epoch = randomBytes(8);

  // Server side: the INITIATIONs are made first, so only the server's work is timed.
  const batch: Buffer[] = [];
  for (let i = 0; i < 400; i++) batch.push(new Initiator(cid).initiation({ ...intro, sessionId: randomBytes(16) }));
  let done = 0;
  let t0 = performance.now();
  for (const f of batch) {
    if (responder.precheck(f, FRAME_HEADER_BYTES, f.length, source, false) !== 'ok') throw new Error('mac1');
    const r = responder.read(f, FRAME_HEADER_BYTES, f.length);
    responder.respond(r, epoch, 0, () => false);
    done++;
  }
  const serverPerSecond = done / ((performance.now() - t0) / 1000);

  done = 0;
  t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    const init = new Initiator(cid);
    const f = init.initiation({ ...intro, sessionId: randomBytes(16) });
    const r = responder.read(f, FRAME_HEADER_BYTES, f.length);
    const { frame } = responder.respond(r, epoch, 0, () => false);
    init.response(frame, FRAME_HEADER_BYTES, frame.length);
    done++;
  }
  return { serverPerSecond, wholePerSecond: done / ((performance.now() - t0) / 1000) };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = measureHandshakes();
  if (process.argv.includes('--json')) console.log(JSON.stringify(r));
  else console.log(`handshakes per second on one core: server side ${r.serverPerSecond.toFixed(0)}, whole handshake (both sides) ${r.wholePerSecond.toFixed(0)}`);
}
