// `dp-tcp check` and the positions of config problems: YAML errors name their
// line and column, a check lists every problem (with its line) instead of the
// first, a good file gets a one-line summary, and `status -c` reads no secret.
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { check, summarize } from '../../src/cli/check.js';
import type { Lookup } from '../../src/config/resolve.js';
import { checkConfig, ConfigError, outlineConfig, parseConfig } from '../../src/config/load.js';
import { removeDir, tempDir } from '../helpers/tmp.js';

const root = new URL('../../', import.meta.url).pathname;
const dir = tempDir('dptcp-check-');
after(() => removeDir(dir));

function file(name: string, text: string, mode = 0o600): string {
  const f = join(dir, name);
  writeFileSync(f, text);
  chmodSync(f, mode);
  return f;
}

function thrown(f: () => unknown): ConfigError {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof ConfigError, `a ConfigError, not ${String(e)}`);
    return e;
  }
  assert.fail('expected a ConfigError');
}

const GOOD_CLIENT = `client:
  tunnel_device: { name: dptcp-c, ip: 10.0.0.2 }
  links:
    - { name: wan1, remote: "10.0.1.1:31411", local: 10.0.1.2 }
    - { name: wan2, remote: "10.0.2.1:31413", local: 10.0.2.2 }
`;

describe('config problems have positions', () => {
  it('a file whose aliases expand past the parser\'s bound is one problem of that file, with or without -r', () => {
    const lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i < 12; i++) lines.push(`a${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(', ')}]`);
    lines.push('client: {}');
    const f = join(dir, 'bomb.yaml');
    writeFileSync(f, lines.join('\n') + '\n', { mode: 0o600 });
    for (const role of [undefined, 'client'] as const) {
      const r = checkConfig(f, role);
      assert.equal(r.problems.length, 1, `-r ${role}`);
      assert.match(r.problems[0]!.located(), new RegExp(`^${f.replaceAll('/', '\\/')}.*cannot be read`), `-r ${role}`);
    }
  });

  it('a YAML syntax error names its line and column, first in the message', () => {
    // The acceptance check's file: the third line is indented one column short.
    const e = thrown(() => parseConfig('server:\n  tcp1_listen_addr: 10.0.1.1\n tcp1_listen_port: 1\n', 'config.yaml', 'server'));
    assert.match(e.message, /^config\.yaml:3:1: is not valid YAML: All mapping items must start at the same column$/, 'file:line:col: why');
    assert.deepEqual(e.at, { line: 3, col: 1 }, 'the position as fields too');
    for (const [yaml, line] of [
      ['client:\n  tunnel_device:\n\tname: x\n', 3],
      ['client: 1\nclient: 2\n', 2],
      ['a: [1, 2\n', 2],
      ['client:\n  links:\n    - { remote: "10.0.1.1:1"\n', 4],
    ] as const) {
      const m = thrown(() => parseConfig(yaml, 'c.yaml', 'client'));
      assert.match(m.message, new RegExp(`^c\\.yaml:${line}:\\d+: is not valid YAML: `), `line ${line} of ${JSON.stringify(yaml)}`);
      assert.ok(!m.message.includes('\n'), 'one line');
    }
  });

  it('a bad field keeps its one-line message, and carries the line of its key', () => {
    const e = thrown(() => parseConfig(GOOD_CLIENT.replace('31413', '70000'), 'c.yaml', 'client'));
    assert.equal(e.message, "c.yaml: client.links[1].remote: port 70000 is out of range", 'the message as before');
    assert.deepEqual(e.at, { line: 5, col: 21 }, 'line 5, at the key remote');
    assert.equal(e.located(), 'c.yaml:5:21: client.links[1].remote: port 70000 is out of range', 'the form check prints');
  });
});

describe('dp-tcp check', () => {
  it('a good file: exit 0 and one line saying what it describes', async () => {
    const r = await check(file('good.yaml', GOOD_CLIENT));
    assert.equal(r.exitCode, 0, r.lines.join('\n'));
    assert.equal(r.lines.length, 1, 'one line');
    assert.match(
      r.lines[0]!,
      /good\.yaml: ok: client, TUN dptcp-c 10\.0\.0\.2\/24 mtu 1400, 2 links \(wan1 10\.0\.1\.2 -> 10\.0\.1\.1:31411, wan2 10\.0\.2\.2 -> 10\.0\.2\.1:31413\), open mode .*, status on 127\.0\.0\.1:9401$/,
      'role (from the file), TUN, links, security, status',
    );
    for (const side of ['client', 'server'] as const) {
      const o = await check(join(root, `config/${side}.yaml`));
      assert.equal(o.exitCode, 0, `the original's ${side} file: ${o.lines.join('\n')}`);
    }
  });

  it('a bad file: exit 2 and every problem on its own line, in file order, with its line', async () => {
    const f = file(
      'bad.yaml',
      `client:
  tunnel_device: { name: this-name-is-far-too-long, ip: 10.0.0.2 }
  links:
    - { remote: "10.0.1.1:70000" }
    - { remote: nope, local: 1.2.3 }
  timing: { keepalive_interval_ms: 5 }
  psk_file: ${join(dir, 'missing.psk')}
  colour: blue
logger: { level: loud }
`,
    );
    const r = await check(f);
    assert.equal(r.exitCode, 2, 'exit 2');
    const lines = r.lines.slice(0, -1);
    const expected: Array<[number, RegExp]> = [
      [2, /client\.tunnel_device\.name: 'this-name-is-far-too-long' is not a valid interface name/],
      [4, /client\.links\[0\]\.remote: port 70000 is out of range/],
      [5, /client\.links\[1\]\.remote: must be address:port/],
      [6, /client\.timing\.keepalive_interval_ms: must be between 10 and 60000, got 5/],
      [7, /client\.psk_file: cannot read .*missing\.psk: ENOENT/],
      [8, /client\.colour: is not a known field/],
      [9, /logger\.level: must be one of error, warn, info, debug, trace, got 'loud'/],
    ];
    assert.equal(lines.length, expected.length, `one line per problem:\n${r.lines.join('\n')}`);
    expected.forEach(([line, re], i) => {
      assert.ok(lines[i]!.startsWith(`${f}:${line}:`), `problem ${i + 1} on line ${line}: ${lines[i]}`);
      assert.match(lines[i]!, re, `problem ${i + 1}`);
    });
    assert.equal(r.lines.at(-1), `${f}: 7 problems`, 'and how many');
  });

  it('a failing link of the original format does not hide the next one, nor turn into unknown fields', () => {
    const r = checkConfig(
      file('legacy.yaml', 'client:\n  tcp1_dial_addr: 10.0.1\n  tcp1_dial_port: 1\n  tcp2_dial_addr: 10.0.0.1\n  tunnel_device: { name: a, ip: 10.0.0.2 }\n'),
    );
    assert.deepEqual(
      r.problems.map((p) => `${p.path}: ${p.problem}`).sort(),
      ["client.tcp1_dial_addr: must be an IP address or a host name, got '10.0.1'", 'client.tcp2_dial_port: is required'],
      'both links, nothing else',
    );
    assert.deepEqual(
      r.problems.map((p) => p.at?.line),
      [1, 2],
      'a missing field at the mapping that lacks it (client:, line 1), a bad one at its key',
    );
    assert.equal(r.config, undefined, 'no config from a bad file');
  });

  it('reads the key files the config names', () => {
    const key = file('client.key', `${Buffer.alloc(32, 7).toString('base64')}\n`, 0o644);
    const r = checkConfig(file('keyed.yaml', `${GOOD_CLIENT}  private_key_file: ${key}\n  server_public_key: "${Buffer.alloc(32, 9).toString('base64')}"\n`));
    assert.equal(r.problems.length, 1, r.problems.map((p) => p.located()).join('\n'));
    assert.match(r.problems[0]!.located(), /keyed\.yaml:6:3: client\.private_key_file: .*can be read or written by group or others \(mode 644\)/, 'a key others can read');
    chmodSync(key, 0o600);
    const ok = checkConfig(join(dir, 'keyed.yaml'));
    assert.equal(ok.problems.length, 0, 'fine once it is private');
    assert.match(summarize(ok.config!), /peer keys, chacha20-poly1305/, 'the summary names the security');
  });

  it('a file that says neither client nor server, an unreadable file, and a role given on the command line', async () => {
    assert.match((await check(file('none.yaml', 'logger: { level: info }\n'))).lines[0]!, /none\.yaml:1:1: must have one top-level key, client: or server:/, 'which side?');
    assert.match((await check(join(dir, 'absent.yaml'))).lines[0]!, /absent\.yaml: cannot read the config file: ENOENT/, 'unreadable');
    const asServer = await check(join(dir, 'good.yaml'), { role: 'server' });
    assert.equal(asServer.exitCode, 2, 'a client file checked as a server');
    assert.match(asServer.lines[0]!, /this is a client config, but dp-tcp was started as server/, 'says so');
  });

  it('looks the host names up as a start would: their addresses in the summary, one that does not resolve a problem', async () => {
    const f = file('named.yaml', GOOD_CLIENT.replace('10.0.1.1:31411', 'vpn.example.test:31411'));
    const asked: string[] = [];
    const found: Lookup = async (name) => {
      asked.push(name);
      return '192.0.2.7';
    };
    const ok = await check(f, { lookup: found });
    assert.equal(ok.exitCode, 0, ok.lines.join('\n'));
    assert.match(ok.lines[0]!, /wan1 10\.0\.1\.2 -> vpn\.example\.test:31411.*; vpn\.example\.test is 192\.0\.2\.7$/, 'the name and its address');
    assert.deepEqual(asked, ['vpn.example.test'], 'only the name is looked up, not the addresses');
    const missing: Lookup = async (name) => {
      throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
    };
    const bad = await check(f, { lookup: missing });
    assert.equal(bad.exitCode, 2, 'a name that does not resolve would stop the start');
    assert.match(bad.lines[0]!, /named\.yaml: link wan1: cannot resolve the server's name 'vpn\.example\.test' to an IPv4 address .*: ENOTFOUND/, 'the link, the name and the answer');
    assert.match(bad.lines.at(-1)!, /named\.yaml: 1 problem$/, 'counted');
    const both = file('named2.yaml', GOOD_CLIENT.replace('10.0.1.1:31411', 'vpn.example.test:31411').replace('10.0.2.1:31413', 'vpn2.example.test:31413'));
    const two = await check(both, { lookup: missing });
    assert.equal(two.exitCode, 2);
    assert.equal(two.lines.length, 3, two.lines.join('\n'));
    assert.match(two.lines[0]!, /link wan1: cannot resolve the server's name 'vpn\.example\.test'/, 'the first name');
    assert.match(two.lines[1]!, /link wan2: cannot resolve the server's name 'vpn2\.example\.test'/, 'and the second, not only the first');
    assert.match(two.lines[2]!, /named2\.yaml: 2 problems$/, 'both counted');
    const offline = await check(f, { lookup: missing, resolve: false });
    assert.equal(offline.exitCode, 0, 'resolve: false checks the file alone');
    assert.doesNotMatch(offline.lines[0]!, / is /, 'and names no address');
  });

  it('runs as a command: exit 0 with the summary on stdout, exit 2 with the problems on stderr', () => {
    const cli = (args: string[]): SpawnSyncReturns<string> =>
      spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/index.ts', ...args], { cwd: root, encoding: 'utf8', timeout: 30_000 });
    const good = cli(['check', '-c', join(dir, 'good.yaml')]);
    assert.equal(good.status, 0, good.stderr);
    assert.match(good.stdout, /good\.yaml: ok: client/, 'summary');
    // A name under .invalid never resolves (RFC 6761); --no-resolve does not ask.
    const named = file('invalid-name.yaml', GOOD_CLIENT.replace('10.0.1.1:31411', 'vpn.example.invalid:31411'));
    const offline = cli(['check', '--no-resolve', '-c', named]);
    assert.equal(offline.status, 0, offline.stderr);
    // A start with two such names stops before it needs a privilege, naming both, a line each
    // (ENOTFOUND, or EAI_AGAIN where no resolver answers: exit 2 or 1).
    const twoNamed = file('invalid-names.yaml', GOOD_CLIENT.replace('10.0.1.1:31411', 'vpn.example.invalid:31411').replace('10.0.2.1:31413', 'vpn2.example.invalid:31413'));
    const start = cli(['client', '-c', twoNamed]);
    assert.ok(start.status === 2 || start.status === 1, `${start.status}: ${start.stderr}`);
    const lines = start.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 2, start.stderr);
    assert.match(lines[0]!, /^dp-tcp: error: .*invalid-names\.yaml: link wan1: cannot resolve the server's name 'vpn\.example\.invalid'/);
    assert.match(lines[1]!, /^dp-tcp: error: .*invalid-names\.yaml: link wan2: cannot resolve the server's name 'vpn2\.example\.invalid'/);
    const bad = cli(['check', '-c', join(dir, 'bad.yaml')]);
    assert.equal(bad.status, 2, bad.stdout);
    assert.match(bad.stderr, /bad\.yaml:4:\d+: client\.links\[0\]\.remote/, 'problems on stderr');
    assert.doesNotMatch(bad.stderr, /\n\s+at /, 'no stack trace');
  });
});

describe('dp-tcp status -c reads no secret', () => {
  it('takes role, TUN name and status_listen from a file whose key files are missing or unreadable', () => {
    const f = file('status.yaml', `${GOOD_CLIENT}  psk_file: /nonexistent/psk\n  status_listen: "127.0.0.1:9555"\n`);
    assert.deepEqual(outlineConfig(f), { role: 'client', tunName: 'dptcp-c', statusListen: { address: '127.0.0.1', port: 9555 } }, 'no -r needed');
    assert.equal(outlineConfig(f, 'client').tunName, 'dptcp-c', 'with -r');
    assert.match(thrown(() => outlineConfig(f, 'server')).message, /server: is required \(is this a client config\?\)/, 'the wrong -r is named');
    const off = file('off.yaml', GOOD_CLIENT.replace('client:\n', 'client:\n  status_listen: off\n'));
    assert.equal(outlineConfig(off).statusListen, undefined, 'status_listen off');
  });
});
