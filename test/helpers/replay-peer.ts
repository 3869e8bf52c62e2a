// Run inside the client namespace: performs one genuine handshake with the
// key (as a recorded legitimate client would have), then replays the very same
// bytes on a new connection. Prints JSON: did each connection get WELCOME?
//   node --import tsx test/helpers/replay-peer.ts HOST PORT PSK_FILE
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { clientProof, newNonce } from '../../src/protocol/auth.js';
import { FRAME_HEADER_BYTES, FrameDecoder, FrameType } from '../../src/protocol/frame.js';
import { decodeChallenge, encodeAuth, encodeHello } from '../../src/protocol/handshake.js';

const [host, portText, pskFile] = process.argv.slice(2) as [string, string, string];
const port = Number(portText);
const psk = Buffer.from(readFileSync(pskFile, 'utf8').trim());

function session(send: (frames: { type: number; body: Buffer }[], write: (b: Buffer) => void) => void): Promise<number[]> {
  return new Promise((resolve) => {
    const seen: number[] = [];
    const frames: { type: number; body: Buffer }[] = [];
    const s = connect({ host, port });
    const d = new FrameDecoder(1 << 20, (t, b, st, e) => {
      seen.push(t);
      frames.push({ type: t, body: Buffer.from(b.subarray(st, e)) });
      send(frames, (x) => s.write(x));
    });
    s.on('data', (c: Buffer) => d.push(c));
    s.on('error', () => {});
    s.on('close', () => resolve(seen));
    s.on('connect', () => send(frames, (x) => s.write(x)));
    setTimeout(() => s.destroy(), 3000);
  });
}

const hello = encodeHello({
  sessionId: randomBytes(16),
  nonce: newNonce(),
  auth: true,
  encryption: 'chacha20-poly1305',
  offload: true, // as the e2e server has it (the default)
  linkId: 0,
  linkCount: 1,
  addresses: [{ family: 4, address: '10.0.0.9', prefix: 24 }],
});
let recordedAuth: Buffer | undefined;
const genuine = await session((frames, write) => {
  if (frames.length === 0) return write(hello);
  const last = frames[frames.length - 1]!;
  if (last.type === FrameType.Challenge) {
    const c = decodeChallenge(last.body, 0, last.body.length);
    recordedAuth = encodeAuth(clientProof(psk, hello.subarray(FRAME_HEADER_BYTES), c.nonce, c.mac));
    write(recordedAuth);
  }
});
const replay = await session((frames, write) => {
  if (frames.length === 0) write(Buffer.concat([hello, recordedAuth as Buffer]));
});
process.stdout.write(
  JSON.stringify({ genuineWelcome: genuine.includes(FrameType.Welcome), replayWelcome: replay.includes(FrameType.Welcome) }) + '\n',
);
