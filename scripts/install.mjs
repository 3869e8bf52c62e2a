// npm install hook: keep the addon that ships in the package if it loads on
// this machine and is not older than its sources; otherwise build it.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const addon = join(root, 'build', 'Release', 'dptcp.node');
const sources = [join(root, 'binding.gyp'), ...readdirSync(join(root, 'native')).map((f) => join(root, 'native', f))];

function prebuiltUsable() {
  if (!existsSync(addon)) return 'no prebuilt addon';
  const built = statSync(addon).mtimeMs;
  if (sources.some((s) => statSync(s).mtimeMs > built)) return 'the native sources are newer than the addon';
  try {
    createRequire(import.meta.url)(addon);
    return '';
  } catch (e) {
    return `the prebuilt addon does not load here: ${String(e.message).split('\n')[0]}`;
  }
}

const why = prebuiltUsable();
if (why === '') {
  console.log('dp-tcp: using the prebuilt native addon');
  process.exit(0);
}
console.log(`dp-tcp: building the native addon (${why})`);
const r = spawnSync('node-gyp', ['rebuild'], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
