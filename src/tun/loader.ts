// Finds and loads the native addon (native/, built by node-gyp). The order:
//   1. $DPTCP_ADDON, when set (tests, odd layouts);
//   2. build/Release/dptcp.node: a local build — the checkout's own (npm run
//      build:native), or the one the install hook built where no prebuild fits;
//   3. prebuilds/linux-<arch>/dptcp.glibc.node: the addons the package ships
//      (scripts/prebuild.sh; npm pack makes them), so an install needs no
//      compiler and no install script. The file names follow the convention
//      of node-gyp-build (prebuilds/<platform>-<arch>/<name>.<tags>.node).
// scripts/install.mjs tries the same files in the same order; keep them alike.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DpError, errorMessage } from '../errors.js';
import type { NativeAddon } from './native.js';

export type AddonSource = 'DPTCP_ADDON' | 'local build' | 'prebuilt';

export interface AddonCandidate {
  readonly path: string;
  readonly source: AddonSource;
}

export interface LoadedAddon {
  readonly addon: NativeAddon;
  readonly path: string;
  readonly source: AddonSource;
}

/** The package root: works from src/ (tsx) and dist/ (built). */
export function packageRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

/** 'glibc', 'musl', or undefined when it cannot be told. */
export function libcFamily(): 'glibc' | 'musl' | undefined {
  try {
    const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
    if (header === undefined) return undefined;
    return header.glibcVersionRuntime ? 'glibc' : 'musl';
  } catch {
    return undefined;
  }
}

/** The prebuilt addon for a platform, relative to the package root. */
export function prebuildPath(platform: string = process.platform, arch: string = process.arch): string {
  return join('prebuilds', `${platform}-${arch}`, 'dptcp.glibc.node');
}

/** Candidate files, in the order they are tried. */
export function addonCandidates(root = packageRoot(), env: NodeJS.ProcessEnv = process.env): AddonCandidate[] {
  const list: AddonCandidate[] = [];
  const override = env['DPTCP_ADDON'];
  if (override) list.push({ path: resolve(override), source: 'DPTCP_ADDON' });
  list.push({ path: join(root, 'build', 'Release', 'dptcp.node'), source: 'local build' });
  list.push({ path: join(root, prebuildPath()), source: 'prebuilt' });
  return list;
}

/** Is this the source checkout (src/ and tsconfig.json are not in the package)? */
export function isCheckout(root = packageRoot()): boolean {
  return existsSync(join(root, 'src')) && existsSync(join(root, 'tsconfig.json'));
}

/** What to do when no addon loads: differs between a checkout and an installed package. */
export function noAddonAdvice(root = packageRoot()): string {
  if (isCheckout(root)) return "build it with 'npm run build:native' (needs g++, make, python3)";
  return (
    `this package has prebuilt addons for linux-x64 and linux-arm64 (glibc); for ${process.platform}-${process.arch}` +
    `${libcFamily() === 'musl' ? ' with musl' : ''} one is built from source at install: install g++, make and python3, ` +
    `then run 'npm rebuild dp-tcp' (add -g for a global install), and 'dp-tcp doctor' to check`
  );
}

let cached: LoadedAddon | undefined;

/** Loads the addon once and says which file it came from; on failure the error lists every path tried and why. */
export function loadAddonInfo(): LoadedAddon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  for (const c of addonCandidates()) {
    if (!existsSync(c.path)) {
      tried.push(`  ${c.path}: not there`);
      continue;
    }
    if (c.source === 'prebuilt' && libcFamily() === 'musl') {
      tried.push(`  ${c.path}: skipped: built for glibc, and this system uses musl`);
      continue;
    }
    try {
      cached = { addon: require(c.path) as NativeAddon, path: c.path, source: c.source };
      return cached;
    } catch (e) {
      tried.push(`  ${c.path}: ${errorMessage(e).split('\n')[0]}`);
    }
  }
  throw new DpError('ERR_NATIVE_LOAD', `cannot load the dp-tcp native addon: ${noAddonAdvice()}; tried:\n${tried.join('\n')}`);
}

/** Loads the addon once; on failure the error lists every path tried and why. */
export function loadAddon(): NativeAddon {
  return loadAddonInfo().addon;
}

/**
 * The addon, or null where it cannot load: for the parts that have a way without it (the data
 * loop, the native path and reader, the link's optional calls), each of which says which.
 */
export function optionalAddon(): NativeAddon | null {
  try {
    return loadAddon();
  } catch {
    return null;
  }
}
