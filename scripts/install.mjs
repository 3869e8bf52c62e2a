// npm install hook. dp-tcp must work without it: npm 11 runs no install script
// of a dependency it has not been allowed to, and the package ships prebuilt
// addons (prebuilds/linux-<arch>/dptcp.glibc.node) that src/tun/loader.ts finds
// by itself. When the hook does run:
//   - in an installed package: keep an addon that loads (a local build, else the
//     prebuild for this machine); only where none does, build one from native/;
//   - in the source checkout (npm ci): build build/Release from native/ unless
//     it is there, loads and is not older than its sources.
// A build runs in a directory of its own and its result replaces
// build/Release/dptcp.node only once it loads, so a failed build never removes
// a working addon. It uses the running Node's headers when they are installed
// next to it (/usr/include/node for Debian's nodejs), so nothing is downloaded.
// The candidates are those of src/tun/loader.ts, in the same order.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const local = join(root, 'build', 'Release', 'dptcp.node');
const prebuild = join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'dptcp.glibc.node');
const checkout = existsSync(join(root, 'src')) && existsSync(join(root, 'tsconfig.json'));
const require = createRequire(import.meta.url);

function say(line) {
  console.log(`dp-tcp: ${line}`);
}

/** '' when the file loads here, else why not. */
function loads(path) {
  if (!existsSync(path)) return 'not there';
  try {
    require(path);
    return '';
  } catch (e) {
    return `does not load here: ${String(e?.message ?? e).split('\n')[0]}`;
  }
}

function isMusl() {
  try {
    return !process.report.getReport().header.glibcVersionRuntime;
  } catch {
    return false;
  }
}

function sourcesNewerThan(path) {
  const built = statSync(path).mtimeMs;
  const sources = [join(root, 'binding.gyp'), ...readdirSync(join(root, 'native')).map((f) => join(root, 'native', f))];
  return sources.some((s) => statSync(s).mtimeMs > built);
}

/** The node-gyp npm runs scripts with, else the one on PATH, else the one bundled with npm. */
function nodeGyp() {
  const fromNpm = process.env.npm_config_node_gyp;
  if (fromNpm && existsSync(fromNpm)) return [process.execPath, fromNpm];
  const which = spawnSync('sh', ['-c', 'command -v node-gyp'], { encoding: 'utf8' });
  if (which.status === 0 && which.stdout.trim()) return [which.stdout.trim()];
  const bundled = resolve(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  if (existsSync(bundled)) return [process.execPath, bundled];
  return undefined;
}

/**
 * The environment for node-gyp: the running Node's own headers as nodedir,
 * unless one is configured. node-gyp lets npm_config_* in the environment
 * override its arguments, so an empty npm_config_nodedir (no ~/.npmrc) would
 * send it to download headers: the variable is what is set.
 */
function gypEnv() {
  const env = { ...process.env };
  if (env.npm_config_nodedir) return env;
  delete env.npm_config_nodedir;
  const dir = resolve(dirname(process.execPath), '..');
  if (existsSync(join(dir, 'include', 'node', 'node_api.h'))) env.npm_config_nodedir = dir;
  return env;
}

/** Builds native/ in a scratch directory; returns '' and installs the result at `local`, or why it failed. */
function build() {
  const gyp = nodeGyp();
  if (!gyp) return 'node-gyp was not found (it comes with npm)';
  // Inside the package, so binding.gyp finds node-addon-api in node_modules above it.
  const scratch = mkdtempSync(join(root, '.build-'));
  try {
    cpSync(join(root, 'binding.gyp'), join(scratch, 'binding.gyp'));
    cpSync(join(root, 'native'), join(scratch, 'native'), { recursive: true });
    const args = [...gyp.slice(1), 'rebuild'];
    const env = gypEnv();
    const headers = env.npm_config_nodedir ? `the headers in ${env.npm_config_nodedir}` : 'headers node-gyp downloads';
    say(`building the native addon with ${headers}: ${[gyp[0], ...args].join(' ')}`);
    const r = spawnSync(gyp[0], args, { cwd: scratch, stdio: 'inherit', env });
    if (r.error) return `node-gyp did not run: ${r.error.message}`;
    if (r.status !== 0) return `node-gyp exited with ${r.status ?? r.signal}`;
    const out = join(scratch, 'build', 'Release', 'dptcp.node');
    const why = loads(out);
    if (why !== '') return `the addon built ${why}`;
    mkdirSync(dirname(local), { recursive: true });
    renameSync(out, local); // same file system: atomic, the old file stays usable until now
    return '';
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

function main() {
  const localWhy = loads(local);
  if (localWhy === '' && !(checkout && sourcesNewerThan(local))) {
    say(`using the native addon built here (${local})`);
    return 0;
  }
  if (!checkout) {
    const preWhy = isMusl() ? 'built for glibc, and this system uses musl' : loads(prebuild);
    if (preWhy === '') {
      say(`using the prebuilt native addon for ${process.platform}-${process.arch}`);
      return 0;
    }
    say(`no prebuilt addon fits (${process.platform}-${process.arch}: ${preWhy}); building one from source`);
  }
  const buildWhy = build();
  if (buildWhy === '') {
    say(`built the native addon (${local})`);
    return 0;
  }
  if (localWhy === '') {
    say(`warning: rebuilding failed (${buildWhy}); keeping the addon that was there (${local})`);
    return 0;
  }
  const fix = checkout
    ? 'fix the build, or install what it needs: g++, make and python3'
    : `the package has prebuilt addons for linux-x64 and linux-arm64 (glibc) only; to build one here install g++, make and python3 (Debian/Ubuntu: apt-get install g++ make python3), then run 'npm rebuild dp-tcp' (with -g for a global install); 'dp-tcp doctor' checks the result`;
  console.error(`dp-tcp: error: no native addon for this machine: ${buildWhy}; ${fix}`);
  return 1;
}

process.exitCode = main();
