#!/usr/bin/env node
// The command line. The tunnel (run.js) and the status client are imported
// when their command runs, so `genkey` and `pubkey` start fast and never load
// the tunnel core, the addon loader or the metrics.
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { DEFAULT_STATUS_PORT, type Role } from '../config/types.js';
import { DpError, errorMessage } from '../errors.js';
import { isLogLevel, LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '../log.js';
import { genkey, pubkey } from './keys.js';

function report(e: unknown): void {
  // Known errors are one line for the user; anything else keeps its stack.
  if (e instanceof DpError) process.stderr.write(`dp-tcp: error: ${e.message}\n`);
  else process.stderr.write(`dp-tcp: unexpected error: ${e instanceof Error ? e.stack : errorMessage(e)}\n`);
  process.exitCode = e instanceof DpError ? e.exitCode : 1;
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
    .action(async (opts: { config: string; logLevel?: LogLevel; logFormat?: LogFormat; statsFile?: string; user?: string }) => {
      try {
        const { run } = await import('./run.js');
        process.exitCode = await run(role, opts);
      } catch (e) {
        report(e);
      }
    });
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
  .description("show a running side's links: state, RTT, packets, eliminations, drops")
  .option('-u, --url <url>', `status URL (default: http://127.0.0.1:${DEFAULT_STATUS_PORT.server}/status)`)
  .option('-c, --config <file>', "take the URL from this config's status_listen")
  .addOption(new Option('-r, --role <role>', 'the role of --config').choices(['client', 'server']).default('server'))
  .option('-w, --watch', 'refresh every second until interrupted')
  .option('--json', 'print the raw JSON')
  .action(async (opts: { url?: string; config?: string; role: Role; watch?: boolean; json?: boolean }) => {
    try {
      let url = opts.url ?? `http://127.0.0.1:${DEFAULT_STATUS_PORT.server}/status`;
      if (opts.config && !opts.url) {
        const { loadConfig } = await import('../config/load.js');
        const l = loadConfig(opts.config, opts.role).statusListen;
        if (!l) throw new DpError('ERR_CONFIG', `${opts.config}: status_listen is off`, { exitCode: 2 });
        url = `http://${l.address.includes(':') ? `[${l.address}]` : l.address}:${l.port}/status`;
      }
      const { status } = await import('./status.js');
      await status({ url, json: opts.json === true, watch: opts.watch === true });
    } catch (e) {
      report(e);
    }
  });

program
  .command('genkey')
  .description('print a new private key (base64, as wg genkey); keep it in a file only its owner can read')
  .action(() => {
    try {
      genkey();
    } catch (e) {
      report(e);
    }
  });

program
  .command('pubkey')
  .description('read a private key on standard input, print its public key (as wg pubkey)')
  .action(async () => {
    try {
      await pubkey();
    } catch (e) {
      report(e);
    }
  });

await program.parseAsync(process.argv);
