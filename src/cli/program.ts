// The command line (its entry is index.ts). The tunnel (run.js) and the
// status client are imported when their command runs, so `genkey` and
// `pubkey` start fast and never load the tunnel core, the addon loader or the
// metrics.
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { Role } from '../config/types.js';
import { DpError, errorMessage } from '../errors.js';
import { isLogLevel, LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '../log.js';
import { genkey, pubkey } from './keys.js';

function report(e: unknown): void {
  // Known errors are a line each for the user (several names that do not resolve, one per line);
  // anything else keeps its stack.
  if (e instanceof DpError) process.stderr.write(e.message.split('\n').map((line) => `dp-tcp: error: ${line}\n`).join(''));
  else process.stderr.write(`dp-tcp: unexpected error: ${e instanceof Error ? e.stack : errorMessage(e)}\n`);
  process.exitCode = e instanceof DpError ? e.exitCode : 1;
}

/** A command's action, with whatever it throws reported as report() does. */
function reported<A extends unknown[]>(action: (...args: A) => unknown): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await action(...args);
    } catch (e) {
      report(e);
    }
  };
}

function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

function parseLevel(v: string): LogLevel {
  if (!isLogLevel(v)) throw new InvalidArgumentError(`must be one of ${LOG_LEVELS.join(', ')}`);
  return v;
}

function addRoleCommand(program: Command, role: Role, summary: string): void {
  program
    .command(role)
    .description(summary)
    .requiredOption('-c, --config <file>', `${role} YAML config file`)
    .addOption(new Option('-l, --log-level <level>', 'overrides logger.level of the config').argParser(parseLevel))
    .addOption(new Option('--log-format <format>', 'json lines, or pretty (auto: pretty on a terminal)').choices(LOG_FORMATS).default('auto'))
    .option('--stats-file <file>', 'keep a JSON snapshot of the counters in this file (every second and on exit)')
    .option('--user <user[:group]>', 'drop root to this user once the TUN is open and the sockets are bound')
    .action(
      reported(async (opts: { config: string; logLevel?: LogLevel; logFormat?: LogFormat; statsFile?: string; user?: string }) => {
        // The restart (src/cli/memory.ts) comes before the tunnel's modules load (index.ts does it
        // even before this parser loads; here for a command line it did not recognise).
        const { restartWithHeapFlags } = await import('./memory.js');
        restartWithHeapFlags();
        const { run } = await import('./run.js');
        process.exitCode = await run(role, opts);
      }),
    );
}

const program = new Command()
  .name('dp-tcp')
  .description('Dual-path TCP tunnel: every packet on every link, the first copy to arrive wins')
  .version(packageVersion(), '-V, --version')
  .showHelpAfterError()
  .exitOverride((err) => {
    // commander's usage errors exit 2 like every other input error; help/version exit 0.
    process.exit(err.exitCode === 0 ? 0 : 2);
  });

addRoleCommand(program, 'client', 'dial the server on every link and carry the TUN traffic');
addRoleCommand(program, 'server', 'accept client links and carry the TUN traffic');

program
  .command('status')
  .description('show the running dp-tcp instances of this network namespace (or the one given) and their links: state, RTT, packets, eliminations, drops, last error')
  .option('-u, --url <url>', 'ask this status endpoint (http://host:port/status; host:port will do)')
  .option('-c, --config <file>', 'ask the instance of this config (found by its TUN name, else its status_listen); reads no key or psk')
  .addOption(new Option('-r, --role <role>', 'only clients or only servers (with --config: the side the file describes, if it does not say)').choices(['client', 'server']))
  .option('-w, --watch', 'refresh every second until interrupted')
  .option('--json', 'print JSON: the document of one instance (--url, --config), else { "instances": [...] }')
  .action(
    reported(async (opts: { url?: string; config?: string; role?: Role; watch?: boolean; json?: boolean }) => {
      const { status } = await import('./status.js');
      await status({ ...opts, json: opts.json === true, watch: opts.watch === true });
    }),
  );

program
  .command('check')
  .description('validate a config and the key and psk files it names, and look up its host names, without touching the system: exit 0, or 2 with every problem and its line')
  .requiredOption('-c, --config <file>', 'the YAML config file to check')
  .addOption(new Option('-r, --role <role>', 'the side it describes (default: its top-level key says)').choices(['client', 'server']))
  .option('--no-resolve', 'do not look up host names (the file alone is checked)')
  .action(
    reported(async (opts: { config: string; role?: Role; resolve: boolean }) => {
      const { check } = await import('./check.js');
      const r = await check(opts.config, { role: opts.role, resolve: opts.resolve });
      (r.exitCode === 0 ? process.stdout : process.stderr).write(r.lines.join('\n') + '\n');
      process.exitCode = r.exitCode;
    }),
  );

program
  .command('doctor')
  .description('check this machine: Node, the native addon, /dev/net/tun, CAP_NET_ADMIN, a test TUN device and its offloads, ip, iptables; exit 0 when every required check passes')
  .action(
    reported(async () => {
      const { doctor } = await import('./doctor.js');
      process.exitCode = doctor();
    }),
  );

program
  .command('genkey')
  .description('print a new private key (base64, as wg genkey); keep it in a file only its owner can read')
  .action(
    reported(() => {
      genkey();
    }),
  );

program
  .command('pubkey')
  .description('read a private key on standard input, print its public key (as wg pubkey)')
  .action(
    reported(async () => {
      await pubkey();
    }),
  );

await program.parseAsync(process.argv);
