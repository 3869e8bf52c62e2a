// `npm pack` gives an installable package: the bin works and the built addon
// ships inside it (no compiler needed on the target).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { ROOT, SERVER_YAML, skipReason, Testbed, waitFor } from '../helpers/netns.js';

const execFileP = promisify(execFile);
const skip = skipReason();

describe('npm pack', { skip, timeout: 300_000 }, () => {
  let dir: string;
  let installed: string;
  let tb: Testbed | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dptcp-pack-'));
    await execFileP('npm', ['pack', '--pack-destination', dir], { cwd: ROOT, maxBuffer: 16 << 20 });
    const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'));
    assert.ok(tarball, 'npm pack wrote a tarball');
    const prefix = join(dir, 'app');
    await execFileP('npm', ['install', '--no-audit', '--no-fund', '--prefix', prefix, join(dir, tarball)], { maxBuffer: 16 << 20 });
    installed = join(prefix, 'node_modules', 'dp-tcp');
  });
  after(async () => {
    await tb?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('installs with its bin, the built addon, docs, examples and systemd units', async () => {
    const bin = join(installed, 'dist', 'cli', 'index.js');
    const { stdout } = await execFileP(process.execPath, [bin, '--version']);
    assert.match(stdout.trim(), /^\d+\.\d+\.\d+$/);
    for (const f of ['build/Release/dptcp.node', 'docs/protocol.md', 'config/client.yaml', 'packaging/systemd/dp-tcp-server.service']) {
      assert.ok(existsSync(join(installed, f)), f);
    }
    assert.ok(!existsSync(join(installed, 'test')), 'tests are not shipped');
  });

  it('the installed binary runs a server in a namespace and exits cleanly', async () => {
    tb = await Testbed.create('pkg');
    const p = tb.startDpTcp('server', SERVER_YAML, [], join(installed, 'dist', 'cli', 'index.js'));
    await waitFor(() => /listening/.test(tb!.log('server')), 'server listening', 10_000, () => tb!.log('server'));
    assert.equal(p.exitCode, null);
    assert.equal(await tb.stopDpTcp('server'), 0);
  });
});
