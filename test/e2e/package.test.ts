// `npm pack` gives a package that installs and runs on a machine with no
// compiler and no ~/.npmrc: it carries prebuilt addons for linux-x64 and
// linux-arm64 (prepack builds them), needs no install script, and
// `dp-tcp --version` and `dp-tcp doctor` exit 0 from the installed bin.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { ROOT, SERVER_YAML, skipReason, Testbed, waitFor } from '../helpers/netns.js';

const execFileP = promisify(execFile);
const skip = skipReason();

/** ELF e_machine of a file: 62 x86-64, 183 aarch64. */
function elfMachine(path: string): number {
  const b = readFileSync(path);
  assert.equal(b.readUInt32BE(0), 0x7f454c46, `${path} is an ELF file`);
  return b.readUInt16LE(18);
}

/**
 * The environment of a machine with no compiler and no npm configuration:
 * HOME empty, cc/gcc/g++/make failing, none of the npm_config_* the test
 * runner inherited (npm run sets nodedir and userconfig from this checkout).
 * The npm cache stays the usual one, so dependencies need not be downloaded again.
 */
function bareEnv(dir: string): NodeJS.ProcessEnv {
  const home = join(dir, 'home');
  const nocc = join(dir, 'nocc');
  mkdirSync(home, { recursive: true });
  mkdirSync(nocc, { recursive: true });
  for (const t of ['cc', 'gcc', 'c++', 'g++', 'make', 'cmake']) {
    writeFileSync(join(nocc, t), '#!/bin/sh\necho "no compiler on this machine" >&2\nexit 1\n');
    chmodSync(join(nocc, t), 0o755);
  }
  const cache = process.env['npm_config_cache'] || join(homedir(), '.npm');
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k)) env[k] = v;
  return { ...env, HOME: home, PATH: `${nocc}:${process.env['PATH'] ?? ''}`, npm_config_cache: cache, CI: 'true' };
}

describe('npm pack', { skip, timeout: 600_000 }, () => {
  let dir = '';
  let app: string;
  let installed: string;
  let env: NodeJS.ProcessEnv;
  let tb: Testbed | undefined;
  const cleanup = (): void => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  };
  process.on('exit', cleanup);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dptcp-pack-'));
    await execFileP('npm', ['pack', '--pack-destination', dir], { cwd: ROOT, maxBuffer: 64 << 20 });
    const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'));
    assert.ok(tarball, 'npm pack wrote a tarball');
    env = bareEnv(dir);
    app = join(dir, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), '{"name":"t","version":"1.0.0","private":true}\n');
    try {
      await execFileP('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', join(dir, tarball)], { cwd: app, env, maxBuffer: 64 << 20 });
    } catch (e) {
      const x = e as { stdout?: string; stderr?: string };
      assert.fail(`npm install without a compiler failed:\n${x.stdout ?? ''}\n${x.stderr ?? ''}`);
    }
    installed = join(app, 'node_modules', 'dp-tcp');
  });
  after(async () => {
    await tb?.destroy();
    cleanup();
  });

  it('ships dist, prebuilt addons for linux-x64 and linux-arm64, docs, examples and systemd units; no build/, no tests', () => {
    for (const f of ['dist/cli/index.js', 'docs/protocol.md', 'config/client.yaml', 'packaging/systemd/dp-tcp-server.service', 'native/tun.cc', 'binding.gyp']) {
      assert.ok(existsSync(join(installed, f)), `${f} is in the package`);
    }
    assert.equal(elfMachine(join(installed, 'prebuilds/linux-x64/dptcp.glibc.node')), 62, 'the x64 prebuild is x86-64');
    assert.equal(elfMachine(join(installed, 'prebuilds/linux-arm64/dptcp.glibc.node')), 183, 'the arm64 prebuild is aarch64');
    assert.ok(!existsSync(join(installed, 'build')), 'no build/ (neither shipped nor built at install)');
    assert.ok(!existsSync(join(installed, 'test')), 'tests are not shipped');
    assert.ok(!existsSync(join(installed, 'src')), 'sources are not shipped');
  });

  it('dp-tcp --version runs from node_modules/.bin', async () => {
    const { stdout } = await execFileP(join(app, 'node_modules', '.bin', 'dp-tcp'), ['--version'], { cwd: app, env });
    assert.match(stdout.trim(), /^\d+\.\d+\.\d+$/, 'a version');
  });

  it('dp-tcp doctor exits 0 with the prebuilt addon and leaves no device behind', async () => {
    let out: string;
    try {
      out = (await execFileP(join(app, 'node_modules', '.bin', 'dp-tcp'), ['doctor'], { cwd: app, env })).stdout;
    } catch (e) {
      const x = e as { code?: number; stdout?: string; stderr?: string };
      assert.fail(`dp-tcp doctor exited ${String(x.code)}:\n${x.stdout ?? ''}${x.stderr ?? ''}`);
    }
    assert.match(out, /^ok +addon +loads: prebuilt for linux-/m, `doctor loaded the prebuild:\n${out}`);
    assert.match(out, /^ok +tun device /m, `doctor made its test device:\n${out}`);
    assert.match(out, /ready: every required check passed/, `summary:\n${out}`);
    const links = execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' });
    assert.doesNotMatch(links, /dpdoc/, 'no test device left');
  });

  it('the installed binary runs a server in a namespace and exits cleanly', async () => {
    tb = await Testbed.create('pkg');
    const p = tb.startDpTcp('server', SERVER_YAML, [], join(installed, 'dist', 'cli', 'index.js'));
    await waitFor(() => /listening/.test(tb!.log('server')), 'server listening', 10_000, () => tb!.log('server'));
    assert.equal(p.exitCode, null, 'server still running');
    assert.equal(await tb.stopDpTcp('server'), 0, 'clean exit');
  });
});
