// The tunnel process restarts itself once with its V8 young-generation flag
// (src/cli/memory.ts): which command line it restarts with, that a flag the
// user gave wins, and that the addon's execv keeps the pid and the
// environment and fails with a system error, and that the restart comes
// before the tunnel's modules load. Needs the built addon.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { MALLOC_TUNABLES, NO_MEMORY_REDUCER, SEMI_SPACE_MB, tunedCommandLine } from '../../src/cli/memory.js';
import { loadAddonInfo } from '../../src/tun/loader.js';
import { tempDir } from '../helpers/tmp.js';

const FLAG = `--max-semi-space-size=${SEMI_SPACE_MB}`;

describe('memory settings of the tunnel process', () => {
  it('restarts node with its own flags, the flag, then the script and its arguments', () => {
    const line = tunedCommandLine('/usr/bin/node', ['--enable-source-maps'], ['/usr/bin/node', '/opt/dp-tcp/dist/cli/index.js', 'server', '-c', 'a b.yaml']);
    assert.deepEqual(line, ['/usr/bin/node', '--enable-source-maps', FLAG, NO_MEMORY_REDUCER, '/opt/dp-tcp/dist/cli/index.js', 'server', '-c', 'a b.yaml']);
  });

  it('leaves the memory reducer as the command line names it', () => {
    assert.deepEqual(tunedCommandLine('/n', ['--memory-reducer'], ['/n', 'x.js']), ['/n', '--memory-reducer', FLAG, 'x.js']);
    assert.deepEqual(tunedCommandLine('/n', ['--no-memory_reducer'], ['/n', 'x.js']), ['/n', '--no-memory_reducer', FLAG, 'x.js']);
    assert.deepEqual(tunedCommandLine('/n', ['--memory-reducer-for-small-heaps'], ['/n', 'x.js']), ['/n', '--memory-reducer-for-small-heaps', FLAG, NO_MEMORY_REDUCER, 'x.js']);
  });

  it('does not restart when the flag is given: on the command line (a restarted process) or in NODE_OPTIONS', () => {
    assert.equal(tunedCommandLine('/n', [FLAG], ['/n', 'x.js', 'client']), null);
    assert.equal(tunedCommandLine('/n', ['--max_semi_space_size=8'], ['/n', 'x.js', 'client']), null, 'spelled with underscores, as V8 also takes it');
    assert.equal(tunedCommandLine('/n', [], ['/n', 'x.js', 'client'], '--max_semi_space_size=8'), null, 'so in NODE_OPTIONS');
    assert.equal(tunedCommandLine('/n', ['--max-semi-space-size', '8'], ['/n', 'x.js', 'client']), null);
    assert.equal(tunedCommandLine('/n', [], ['/n', 'x.js', 'client'], '--trace-warnings --max-semi-space-size=16'), null);
    // A different flag of the same prefix is not the flag.
    assert.notEqual(tunedCommandLine('/n', ['--max-semi-space-size-x=3'], ['/n', 'x.js']), null);
  });

  it('execv replaces the program and keeps the pid and the environment', () => {
    const addon = loadAddonInfo().path;
    // The child replaces itself by a node that prints its pid, flags and one variable.
    const child = `
      const a = require(${JSON.stringify(addon)});
      process.env.DPTCP_EXEC_TEST = 'kept';
      process.stdout.write(process.pid + '\\n');
      a.execv(process.execPath, [process.execPath, ${JSON.stringify(FLAG)}, '-e',
        'console.log(process.pid, process.execArgv[0], process.env.DPTCP_EXEC_TEST)']);
    `;
    const out = execFileSync(process.execPath, ['-e', child], { encoding: 'utf8' }).trim().split('\n');
    assert.equal(out.length, 2, out.join('|'));
    const [pid, after] = out as [string, string];
    assert.equal(after, `${pid} ${FLAG} kept`);
  });

  it('restarts before it loads the command line parser or the tunnel: their modules are loaded once, not in both images', () => {
    // A module hook that names each load of the CLI and of the tunnel's run.ts; the restarted
    // image gets the same --import, so the CLI shows up once per image.
    const dir = tempDir('dptcp-restart-');
    writeFileSync(
      join(dir, 'hooks.mjs'),
      `export async function load(url, context, next) {
        if (/\\/cli\\/(index|program|run)\\.ts$/.test(url)) process.stderr.write('loaded ' + url.split('/').pop() + '\\n');
        return next(url, context);
      }`,
    );
    writeFileSync(join(dir, 'register.mjs'), `import { register } from 'node:module'; register(new URL('./hooks.mjs', import.meta.url));`);
    writeFileSync(join(dir, 'bad.yaml'), 'client:\n  bogus: 1\n'); // run.ts loads it and stops with a config error
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--import', join(dir, 'register.mjs'), 'src/cli/index.ts', 'client', '-c', join(dir, 'bad.yaml')], {
      encoding: 'utf8',
      env: { ...process.env, NODE_OPTIONS: '' },
      timeout: 30_000,
    });
    assert.equal(r.status, 2, r.stderr);
    const loads = r.stderr.split('\n').filter((l) => l.startsWith('loaded '));
    // The parser too loads in the restarted image only.
    assert.deepEqual(loads, ['loaded index.ts', 'loaded index.ts', 'loaded program.ts', 'loaded run.ts'], r.stderr);
  });

  it('execv of a missing program throws a system error and returns', () => {
    const { addon } = loadAddonInfo();
    assert.throws(
      () => addon.execv('/nonexistent/node', ['/nonexistent/node']),
      (e: NodeJS.ErrnoException) => e.code === 'ENOENT' && e.syscall === 'execv',
    );
  });

  it('the malloc tunables are ones glibc knows', () => {
    // Unknown tunables are ignored silently by glibc: check the names against its own list.
    const known = execFileSync('/bin/sh', ['-c', 'ld.so --list-tunables 2>/dev/null || /lib64/ld-linux-x86-64.so.2 --list-tunables'], { encoding: 'utf8' });
    for (const t of MALLOC_TUNABLES.split(':')) assert.match(known, new RegExp(`^${t.split('=')[0]!.replaceAll('.', '\\.')}:`, 'm'), t);
  });

});
