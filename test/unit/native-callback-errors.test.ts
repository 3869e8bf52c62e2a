// The addon's poll callbacks run from libuv with no JavaScript below them:
// nothing may be thrown out of them (std::terminate), and an exception thrown
// by the JS callback they call must reach 'uncaughtException' (as for Node's
// own callbacks), neither lost nor left pending to break the next call. The
// SocketReader's callbacks can be made to throw without root (a TUN device
// cannot be made without CAP_NET_ADMIN); each case runs in a child process,
// since the test runner takes 'uncaughtException' for a failed test.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const loader = fileURLToPath(new URL('../../src/tun/loader.ts', import.meta.url));

/** Runs `body` (ESM, top-level await, with `loadAddon` and `pair()` in scope) in a child Node; its last stdout line is JSON. */
function child(body: string): { status: number | null; out: unknown; stderr: string } {
  const script = `
import { createServer, connect } from 'node:net';
import { loadAddon } from ${JSON.stringify(loader)};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function pair() {
  return new Promise((resolve) => {
    let a;
    const server = createServer((b) => resolve({ server, a, b }));
    server.listen(0, '127.0.0.1', () => { a = connect(server.address().port, '127.0.0.1'); });
  });
}
${body}
`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  let out: unknown;
  try {
    out = JSON.parse(last);
  } catch {
    out = r.stdout;
  }
  return { status: r.status, out, stderr: r.stderr };
}

describe('errors in the addon poll callbacks', () => {
  it("a SocketReader's onData and onEnd that throw: each error reaches 'uncaughtException', reading goes on, nothing aborts", () => {
    const r = child(`
const uncaught = [];
process.on('uncaughtException', (e) => uncaught.push(e.message));
const { SocketReader } = loadAddon();
const p = await pair();
p.b._handle.readStop(); // as Link does: the addon reads from now on
const buf = Buffer.alloc(4096);
const data = [];
const ends = [];
const reader = new SocketReader(p.b._handle.fd, buf, (n) => {
  const s = buf.toString('latin1', 0, n);
  data.push(s);
  if (s === 'one') throw new Error('onData threw');
}, (errno) => {
  ends.push(errno);
  throw new Error('onEnd threw');
});
p.a.write('one');
await sleep(100);
p.a.write('two');
await sleep(100);
p.a.end();
await sleep(200);
reader.close();
p.a.destroy();
p.b.destroy();
p.server.close();
console.log(JSON.stringify({ uncaught, data, ends, reads: reader.reads }));
`);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.out, { uncaught: ['onData threw', 'onEnd threw'], data: ['one', 'two'], ends: [0], reads: 2 });
  });

  it("with no 'uncaughtException' listener, a throwing onData ends the process as an uncaught exception does (exit 1, the error on stderr), not by an abort", () => {
    const r = child(`
const { SocketReader } = loadAddon();
const p = await pair();
p.b._handle.readStop(); // as Link does: the addon reads from now on
const buf = Buffer.alloc(4096);
new SocketReader(p.b._handle.fd, buf, () => { throw new Error('onData threw, unhandled'); }, () => {});
p.a.write('x');
await sleep(2000);
console.log(JSON.stringify('not reached'));
`);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /onData threw, unhandled/);
    assert.notEqual(r.out, 'not reached');
  });
});
