import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { Command, Option } from 'commander';
import { requireDatabaseUrl } from '../config/config.js';
import { DEFAULT_COPY_MODE, DEFAULT_DEST_CHECK, MAX_SINGLE_COPY, type CopyMode, type DestCheck } from '../copy/copy-config.js';
import type { ExecuteStage } from '../execute/stage.js';
import { UsageError } from '../errors.js';
import { enableJsonLogs } from '../util/json-log.js';
import { CORES, configFrom, intOption, sizeOption, withConfigOptions } from './options.js';

// Copying into an archive class works; restoring out of one is not a copy.
const STORAGE_CLASSES = ['STANDARD', 'REDUCED_REDUNDANCY', 'STANDARD_IA', 'ONEZONE_IA', 'INTELLIGENT_TIERING', 'GLACIER', 'GLACIER_IR', 'DEEP_ARCHIVE', 'EXPRESS_ONEZONE'];

function storageClassOption(value: string): string {
  const cls = value.trim().toUpperCase();
  if (!STORAGE_CLASSES.includes(cls)) throw new UsageError(`--storage-class must be one of ${STORAGE_CLASSES.join(', ')}, got ${JSON.stringify(value)}`);
  return cls;
}

/** `--keep-source` and `--delete-only` are the two halves of a staged run: one at a time. */
function stageFrom(options: { keepSource?: boolean; deleteOnly?: boolean; dryRun?: unknown; finishSuperseded?: boolean }): ExecuteStage {
  checkFinishSuperseded(options);
  if (options.keepSource && options.deleteOnly) throw new UsageError('--keep-source and --delete-only are two separate runs: pass one of them');
  const stage: ExecuteStage = options.keepSource ? 'keep-source' : options.deleteOnly ? 'delete-only' : 'full';
  // The dry run describes the full move; a narrower preview would mislead.
  if (stage !== 'full' && options.dryRun !== undefined) throw new UsageError(`--dry-run does not combine with --${stage}`);
  return stage;
}

/** `--finish-superseded` deletes sources: not in a run that deletes nothing. */
function checkFinishSuperseded(options: { finishSuperseded?: boolean; keepSource?: boolean; dryRun?: unknown }): void {
  if (!options.finishSuperseded) return;
  if (options.keepSource) throw new UsageError('--finish-superseded deletes sources, which --keep-source never does: run it with --delete-only or alone');
  if (options.dryRun !== undefined) throw new UsageError('--dry-run does not combine with --finish-superseded: see the superseded keys with bucket-migrate report');
}

export function executeCommand(): Command {
  return withConfigOptions(
    new Command('execute')
      .summary('move the planned keys: copy, commit the rows, delete the sources')
      .description(
        'Drain the ledger with --threads worker threads. Each key goes copy → row update (compare-and-set, by primary key)\n' +
          '→ source delete, so every row always names an existing object. Safe to kill at any moment and to run again;\n' +
          'several processes, on one machine or many, may share one ledger.',
      )
      // The flags execute shares with revert (--concurrency, --batch-size,
      // --lease-seconds, --max-attempts, --backoff-seconds, --metrics-*) are
      // written out in each command on purpose: their defaults and help
      // differ per command, and each help lists its flags in its own order.
      .option('--threads <n>', 'worker threads', intOption('--threads', 1, 256), CORES)
      .option('--concurrency <n>', 'S3 requests in flight per thread', intOption('--concurrency', 1, 1024), 64)
      // 250: measured best by `npm run bench -- --batch-sizes 1000` (618 keys/s at 250, 571 at 1,000; 2026-11-24).
      .option('--batch-size <n>', 'ledger rows per claim', intOption('--batch-size', 1, 10_000), 250)
      .option('--pipeline <n>', 'batches each thread keeps in progress', intOption('--pipeline', 1, 16), 2)
      .option('--lease-seconds <n>', 'a claim not renewed for this long is taken over', intOption('--lease-seconds', 2, 86_400), 120)
      .option('--max-attempts <n>', 'failures of one key before it is failed', intOption('--max-attempts', 1, 1000), 5)
      .option('--backoff-seconds <n>', 'first wait before a failed key is retried (doubles each time)', intOption('--backoff-seconds', 0, 3600), 2)
      .addOption(new Option('--multipart-threshold <size>', 'copy larger objects in parts (a size: 5GiB, 500MiB, 5G)').argParser(sizeOption('--multipart-threshold')).default(MAX_SINGLE_COPY, '5GiB'))
      .addOption(new Option('--part-size <size>', 'part size of multipart copies (a size: 256MiB, 64M)').argParser(sizeOption('--part-size')).default(256 * 1024 ** 2, '256MiB'))
      .option('--max-rps <n>', 'S3 requests per second for this whole process: one token bucket shared by all its threads (0: no cap)', intOption('--max-rps', 0, 1_000_000), 0)
      .option('--limit <n>', 'process at most this many keys, then stop (a canary; 0: all)', intOption('--limit', 0, 2_000_000_000), 0)
      .addOption(
        new Option(
          '--dest-check <mode>',
          'how an existing destination is detected before each copy (which also carries If-None-Match: *): list each batch\'s key range once (no HEAD per key; checked at batch start); HEAD each destination right before its copy; or nothing but If-None-Match (AWS, not MinIO)',
        )
          .choices(['list', 'head', 'conditional'])
          .default(DEFAULT_DEST_CHECK),
      )
      .addOption(
        new Option(
          '--copy-mode <mode>',
          'clone: copy single-part objects as they are (COPY directives, pinned to the listed ETag, no HEAD: about 1 request per key); replace: HEAD each source and write its headers back with provenance metadata (2 requests per key)',
        )
          .choices(['clone', 'replace'])
          .default(DEFAULT_COPY_MODE),
      )
      .option('--storage-class <class>', 'storage class of every copy (default: each source\'s own)', storageClassOption)
      .option('--sse-kms-key-id <id>', 'encrypt every copy with this KMS key (default: as each source is)')
      .option('--overwrite', 'replace a different object at the destination instead of recording a conflict', false)
      .option('--keep-source', 'copy and rewrite the rows but leave every source in place (keys wait in db_updated for --delete-only)', false)
      .option('--delete-only', 'only delete the sources of keys already moved (db_updated), each after checking its target is intact', false)
      .option('--delete-unguarded', 'delete sources even without a guard (no trigger, no index on the path column): rows the application writes during the run may then name deleted objects', false)
      .option('--dry-run [n]', 'print the next n actions (default 20) and what would be refused; claims and changes nothing', intOption('--dry-run', 1, 100_000))
      .option('--retry-failed', 're-queue failed and archived (since restored) keys before starting', false)
      .option(
        '--finish-superseded',
        'delete the sources of superseded keys (copied, but no row named them at the commit), each once its copy is checked and no row names it; the copies stay',
        false,
      )
      .option('--progress-interval <s>', 'seconds between progress lines when not on a terminal', intOption('--progress-interval', 1, 3600), 10)
      .option('--quiet', 'no progress output', false)
      .option('--metrics-port <port>', 'serve Prometheus metrics on http://<metrics-host>:<port>/metrics while the run lasts (0: any free port)', intOption('--metrics-port', 0, 65_535))
      // Loopback unless asked: the metrics name buckets and a run's progress, and nothing authenticates a scrape.
      .option('--metrics-host <address>', 'address the metrics server listens on (0.0.0.0: every interface)', '127.0.0.1')
      .addHelpText(
        'after',
        '\nExit codes: 0 all keys settled (done, missing or superseded); 1 a key failed or is in conflict; 2 usage or\nconfiguration error, or a revert is running on this ledger; 130/143 interrupted (run again to resume).\n\nExamples:\n  bucket-migrate execute --threads 4\n  bucket-migrate execute --limit 1000 --threads 1   # a canary\n  bucket-migrate execute --dry-run 50\n  bucket-migrate execute --keep-source        # staged cutover: sources stay\n  bucket-migrate execute --delete-only        # later: delete the moved sources\n  bucket-migrate execute --finish-superseded  # delete the sources no row needed\n  bucket-migrate execute --metrics-port 9464   # Prometheus scrapes /metrics',
      ),
  ).action(async (options, command: Command) => {
    const processId = `${os.hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    if (options.logFormat === 'json') enableJsonLogs({ command: 'execute', process_id: processId });
    const migrate = configFrom(options);
    requireDatabaseUrl(migrate);
    const stage = stageFrom(options);
    // The AWS SDK, worker pool and metrics load with the command, not at start-up.
    const { execute } = await import('../execute/execute.js');
    const code = await execute(
      {
        migrate,
        threads: options.threads,
        concurrency: options.concurrency,
        batchSize: options.batchSize,
        pipeline: options.pipeline,
        leaseSeconds: options.leaseSeconds,
        maxAttempts: options.maxAttempts,
        backoffSeconds: options.backoffSeconds,
        multipartThreshold: options.multipartThreshold,
        partSize: options.partSize,
        maxRps: options.maxRps,
        limit: options.limit,
        stage,
        destCheck: options.destCheck as DestCheck,
        copyMode: options.copyMode as CopyMode,
        overwrite: options.overwrite,
        storageClass: options.storageClass,
        sseKmsKeyId: options.sseKmsKeyId,
        deleteUnguarded: options.deleteUnguarded,
        processId,
      },
      {
        retryFailed: options.retryFailed,
        finishSuperseded: options.finishSuperseded,
        metricsPort: options.metricsPort,
        metricsHost: options.metricsHost,
        dryRun: options.dryRun === true ? 20 : options.dryRun,
        progress: { quiet: options.quiet, intervalSeconds: options.progressInterval, tty: process.stderr.isTTY === true && options.logFormat !== 'json' },
      },
    );
    command.setOptionValue('exitCode', code);
    process.exitCode = code;
  });
}
