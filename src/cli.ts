#!/usr/bin/env node
/**
 * bucket-migrate: move objects from one S3 location to another and rewrite
 * the Postgres rows that point at them.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import dotenv from 'dotenv';
import { executeCommand } from './commands/execute-command.js';
import { HELP_CONFIG } from './commands/help-format.js';
import { migrateCommand } from './commands/migrate-command.js';
import { planCommand } from './commands/plan-command.js';
import { revertCommand } from './commands/revert-command.js';
import { reportCommand } from './commands/report-command.js';
import { seedCommand } from './commands/seed-command.js';
import { validateCommand } from './commands/validate-command.js';
import { FatalError, UsageError, explainDbError, oneLine } from './errors.js';
import { enableJsonLogsFromArgv, jsonLogger } from './util/json-log.js';
import { out } from './util/output.js';

// The AWS SDK warns in eight lines, on Node < 22, that its 2027 releases need
// Node 22; one line of ours replaces it, and only for a person at a terminal
// (logs and pipes stay machine-readable). Set before any S3 client exists.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
if (Number(process.versions.node.split('.')[0]) < 22 && process.stderr.isTTY) {
  process.stderr.write(`note: Node ${process.versions.node} is out of support; the AWS SDK needs Node >= 22 from January 2027\n`);
}

// Values already in the environment win over .env, and flags win over both.
dotenv.config({ quiet: true });

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

/** Commander's own messages (unknown option, bad choice): JSON lines too with --log-format json. */
function writeErr(text: string): void {
  const json = jsonLogger();
  if (!json) return void process.stderr.write(text);
  for (const line of text.split('\n').filter((l) => l.trim() !== '')) json.error(line.replace(/^error: /, ''));
}

function program(): Command {
  const root = new Command('bucket-migrate')
    .description('Move objects between S3 locations and rewrite the Postgres rows that point at them.')
    .version(pkg.version, '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureHelp(HELP_CONFIG)
    .configureOutput({ writeErr });
  for (const command of [
    planCommand(),
    executeCommand(),
    reportCommand(),
    validateCommand(),
    revertCommand(),
    seedCommand(),
    migrateCommand(),
  ]) {
    command.exitOverride().configureHelp(HELP_CONFIG).configureOutput({ writeErr });
    root.addCommand(command);
  }
  root.addHelpText(
    'after',
    '\nConfiguration comes from the environment, a .env file in the working directory, and flags (flags win).\n' +
      'Typical run:\n  bucket-migrate plan --list\n  bucket-migrate execute --threads 4\n  bucket-migrate report\n  bucket-migrate validate',
  );
  return root;
}

async function main(argv: string[]): Promise<number> {
  enableJsonLogsFromArgv(argv);
  // -v/--verbose: the stack of an unexpected error too (the commands print their settings themselves).
  const verbose = argv.slice(2).some((a) => a === '-v' || a === '--verbose');
  try {
    await program().parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here with code 0; bad usage with 1, which we make 2.
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof UsageError) {
      out.error(err.message);
      return 2;
    }
    if (err instanceof FatalError) {
      out.error(err.message);
      return err.exitCode;
    }
    out.error(explainDbError(err) ?? `unexpected error: ${oneLine(err)}`);
    if ((process.env.BUCKET_MIGRATE_DEBUG || verbose) && err instanceof Error) out.info(err.stack ?? '');
    // A missing privilege is configuration, not a failed run: exit 2 like any other setting.
    return (err as { code?: string })?.code === '42501' ? 2 : 1;
  }
}

// `bucket-migrate report | head` closes stdout early: that is the reader's
// choice, not an error worth a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

process.exitCode = await main(process.argv);
