import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DpError, errorMessage } from '../errors.js';
import type { NativeAddon } from './native.js';

let cached: NativeAddon | undefined;

/** Candidate paths, most specific first. Works from src/ (tsx) and dist/ (built). */
export function addonCandidates(): string[] {
  const here = dirname(fileURLToPath(import.meta.url));
  const root = resolve(here, '..', '..');
  const list = [join(root, 'build', 'Release', 'dptcp.node'), join(root, 'build', 'Debug', 'dptcp.node')];
  const override = process.env['DPTCP_ADDON'];
  return override ? [resolve(override), ...list] : list;
}

/** Loads the addon once; on failure the error lists every path tried and why. */
export function loadAddon(): NativeAddon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  for (const path of addonCandidates()) {
    try {
      cached = require(path) as NativeAddon;
      return cached;
    } catch (e) {
      tried.push(`  ${path}: ${errorMessage(e).split('\n')[0]}`);
    }
  }
  throw new DpError(
    'ERR_NATIVE_LOAD',
    `cannot load the dp-tcp native addon (build it with 'npm run build'); tried:\n${tried.join('\n')}`,
  );
}
