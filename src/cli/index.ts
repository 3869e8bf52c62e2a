#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { Role } from '../config/types.js';
import { DpError, errorMessage } from '../errors.js';
import { isLogLevel, LOG_LEVELS, type LogLevel } from '../log.js';
import { exitCodeFor, run } from './run.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
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
    .option('--stats-file <file>', 'keep a JSON snapshot of the counters in this file (every second and on exit)')
    .action(async (opts: { config: string; logLevel?: LogLevel; statsFile?: string }) => {
      try {
        process.exitCode = await run(role, opts);
      } catch (e) {
        // Known errors are one line for the user; anything else keeps its stack.
        if (e instanceof DpError) process.stderr.write(`dp-tcp: error: ${e.message}\n`);
        else process.stderr.write(`dp-tcp: unexpected error: ${e instanceof Error ? e.stack : errorMessage(e)}\n`);
        process.exitCode = exitCodeFor(e);
      }
    });
}

const program = new Command()
  .name('dp-tcp')
  .description('Dual-path TCP tunnel: every packet on every link, the first copy to arrive wins')
  .version(version(), '-V, --version')
  .showHelpAfterError()
  .exitOverride((err) => {
    // commander's usage errors exit 2 like every other input error; help/version exit 0.
    process.exit(err.exitCode === 0 ? 0 : 2);
  });

addRoleCommand(program, 'client', 'dial the server on every link and carry the TUN traffic');
addRoleCommand(program, 'server', 'accept client links and carry the TUN traffic');

await program.parseAsync(process.argv);
