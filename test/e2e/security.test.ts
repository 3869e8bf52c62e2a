// Root end-to-end: an authenticated, encrypted tunnel with strangers, a
// replayed handshake and a wrong-key client knocking at the same ports.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLIENT_YAML, ROOT, SERVER_YAML, skipReason, Testbed, waitFor } from '../helpers/netns.js';

const skip = skipReason();

describe('security between two network namespaces', { skip, timeout: 300_000 }, () => {
  let tb: Testbed;
  let pskFile: string;

  before(async () => {
    tb = await Testbed.create('sec');
    pskFile = join(tb.dir, 'psk');
    writeFileSync(pskFile, randomBytes(32).toString('base64'));
    chmodSync(pskFile, 0o600);
    const sec = `  psk_file: ${pskFile}\n  encryption: chacha20-poly1305\n`;
    tb.startDpTcp('server', SERVER_YAML.replace('logger:', `${sec}logger:`).replace('server:\n', 'server:\n'));
    tb.startDpTcp('client', CLIENT_YAML.replace('logger:', `${sec}logger:`));
    await tb.waitUp(2);
  });
  after(async () => {
    await tb?.destroy();
  });

  it('the authenticated, encrypted tunnel works (ping, 50 MB TCP with sha256)', async () => {
    assert.match(tb.log('server'), /session joined .*encryption=chacha20-poly1305/);
    const ping = await tb.run('client', 'ping', ['-c', '3', '-i', '0.2', '10.0.0.1']);
    assert.match(ping.stdout, /3 received/);
    const file = join(tb.dir, 'enc.bin');
    writeFileSync(file, randomBytes(50 * 1024 * 1024));
    const { out, seconds: s, exitCode } = await tb.tcpTransfer(file, 5200);
    assert.equal(exitCode, 0);
    console.log(`# encrypted: 50 MB in ${s.toFixed(2)} s = ${((50 * 8 * 1.048576) / s).toFixed(0)} Mbit/s`);
    const h = (f: string): string => createHash('sha256').update(readFileSync(f)).digest('hex');
    assert.equal(h(out), h(file));
  });

  it('a stranger sending random bytes reaches nothing and is logged', async () => {
    const junk = join(tb.dir, 'junk.bin');
    writeFileSync(junk, randomBytes(4096));
    await tb.run('client', 'sh', ['-c', `ncat --send-only -w 2 10.0.1.1 31411 < ${junk} || true`]);
    await waitFor(() => /closing link: protocol error|handshake refused/.test(tb.log('server')), 'stranger refused', 3000);
    assert.equal(tb.stats('server').sessions.length, 1, 'no new session');
    assert.ok(tb.stats('server').sessions[0]!.links.every((l) => l.state === 'up'), 'the real links are untouched');
  });

  it('a replayed handshake gets no WELCOME', async () => {
    const { stdout } = await tb.run('client', process.execPath, [
      '--import',
      'tsx',
      join(ROOT, 'test/helpers/replay-peer.ts'),
      '10.0.2.1',
      '31413',
      pskFile,
    ]);
    const r = JSON.parse(stdout) as { genuineWelcome: boolean; replayWelcome: boolean };
    assert.deepEqual(r, { genuineWelcome: true, replayWelcome: false });
  });

  it('a client with the wrong key is refused with a clear error; the real client carries on', async () => {
    const wrongKey = join(tb.dir, 'wrong-psk');
    writeFileSync(wrongKey, randomBytes(32).toString('base64'));
    chmodSync(wrongKey, 0o600);
    const cfg = join(tb.dir, 'wrong.yaml');
    writeFileSync(
      cfg,
      CLIENT_YAML.replace('dptcp-c', 'dptcp-w')
        .replace('10.0.0.2/24', '10.0.0.3/24')
        .replace('fd00:dd::2/64', 'fd00:dd::3/64')
        .replace('logger:', `  psk_file: ${wrongKey}\n  status_listen: off\nlogger:`),
    );
    const wrong = tb.spawn('client', process.execPath, [join(ROOT, 'dist/cli/index.js'), 'client', '-c', cfg], {
      stdout: join(tb.dir, 'wrong.log'),
    });
    const errLog: Buffer[] = [];
    wrong.stderr?.on('data', (d: Buffer) => errLog.push(d));
    await waitFor(() => /keys differ/.test(Buffer.concat(errLog).toString()), 'wrong-key client reports the mismatch', 5000, () =>
      Buffer.concat(errLog).toString(),
    );
    wrong.kill('SIGTERM');
    const ping = await tb.run('client', 'ping', ['-c', '3', '-i', '0.2', '10.0.0.1']);
    assert.match(ping.stdout, /3 received/);
    const sessions = tb.stats('server').sessions;
    assert.ok(!sessions.some((s) => s.peerAddresses.includes('10.0.0.3/24')), 'the wrong-key client got no session');
  });
});
