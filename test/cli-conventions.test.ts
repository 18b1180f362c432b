/**
 * CLI conventions as users of aws-cli and rclone expect them (issue 15,
 * item 8): --profile, --endpoint-url (and the old --s3-endpoint), sizes
 * such as 5GiB in help and flags, help broken between sentences,
 * -v/--verbose, no S3 flags on commands that never use S3, and --dry-run
 * totals (keys, bytes, requests, cost, time at --max-rps).
 */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { sentenceLines } from '../src/commands/help-format.js';
import { sizeOption } from '../src/commands/options.js';
import { formatSize } from '../src/util/output.js';
import { runCli } from './helpers/cli.js';
import { setupTestEnv } from './helpers/services.js';

t.test('help: sizes, flags, and lines that end with their sentence', async (t) => {
  const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '' };
  const execute = (await runCli(['execute', '--help'], { env })).stdout;
  t.match(execute, /--multipart-threshold <size>[\s\S]*\(default: 5GiB\)/);
  t.match(execute, /--part-size <size>[\s\S]*\(default: 256MiB\)/);
  for (const flag of ['--endpoint-url <url>', '--profile <name>', '-v, --verbose', '--log-format <format>']) t.ok(execute.includes(flag), `execute --help offers ${flag}`);
  t.notMatch(execute, /^\s+--s3-endpoint <url>/m, '--s3-endpoint still works, named as the alias, not as an option of its own');
  // The description: each sentence starts its own line.
  t.match(execute, /^Drain the ledger with --threads worker threads\.$/m);
  t.match(execute, /^Safe to kill at any moment and to run again; several processes,/m);
  for (const command of ['report', 'migrate']) {
    const help = (await runCli([command, '--help'], { env })).stdout;
    for (const flag of ['--endpoint-url', '--region', '--profile', '--source-bucket', '--target-prefix', '--table']) {
      t.notOk(help.includes(flag), `${command} does not take ${flag}, which it never uses`);
    }
    t.ok(help.includes('--ledger-schema <name>') && help.includes('--database-url <url>'), `${command} takes the ledger's flags`);
    const refused = await runCli([command, '--source-bucket', 'x'], { env });
    t.equal(refused.code, 2, `${command} --source-bucket is an unknown option`);
  }
  t.equal(sentenceLines('One sentence that is\nbroken. And another\none, e.g. this.'), 'One sentence that is broken.\nAnd another one, e.g. this.');
  t.equal(sentenceLines('Checks:\n- a: one\n  two\n- b'), 'Checks:\n- a: one two\n- b');
});

t.test('sizes in flags', async (t) => {
  const parse = sizeOption('--part-size');
  t.equal(parse('5GiB'), 5 * 1024 ** 3);
  t.equal(parse('256MiB'), 256 * 1024 ** 2);
  t.equal(parse('256M'), 256 * 1024 ** 2, "rclone's 256M");
  t.equal(parse('1.5GiB'), 1.5 * 1024 ** 3);
  t.equal(parse('100MB'), 100e6);
  t.equal(parse('1048576'), 1048576);
  t.throws(() => parse('5 lots'), /--part-size must be a size such as/);
  t.equal(formatSize(5 * 1024 ** 3), '5GiB');
  t.equal(formatSize(1536), '1.5KiB');
  const bad = await runCli(['execute', '--part-size', 'huge'], { env: { PATH: process.env.PATH ?? '' } });
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--part-size must be a size such as 1048576, 64MiB or 5GiB, got "huge"/);
});

t.test('--endpoint-url, --s3-endpoint, --profile, -v and --dry-run totals against the real services', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '30', '--quiet'], { env: env.env })).code, 0);
  const { S3_ENDPOINT: endpoint, AWS_ACCESS_KEY_ID: keyId, AWS_SECRET_ACCESS_KEY: secret, ...noS3 } = env.env;
  t.equal((await runCli(['plan', '--list', '--endpoint-url', endpoint!], { env: env.env })).code, 0, '--endpoint-url');
  const alias = await runCli(['plan', '--s3-endpoint', endpoint!], { env: { ...env.env, S3_ENDPOINT: 'http://127.0.0.1:1' } });
  t.equal(alias.code, 0, `--s3-endpoint still works and wins over the environment\n${alias.stderr}`);

  // A named profile from the shared files, with no key in the environment.
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'bm-profile-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  await fsp.writeFile(path.join(dir, 'credentials'), `[bmtest]\naws_access_key_id = ${keyId}\naws_secret_access_key = ${secret}\n`);
  await fsp.writeFile(path.join(dir, 'config'), '[profile bmtest]\nregion = us-east-1\n');
  const files = { AWS_SHARED_CREDENTIALS_FILE: path.join(dir, 'credentials'), AWS_CONFIG_FILE: path.join(dir, 'config') };
  const profiled = await runCli(['plan', '--profile', 'bmtest', '--endpoint-url', endpoint!], { env: { ...noS3, ...files } });
  t.equal(profiled.code, 0, `--profile reads the credentials\n${profiled.stderr}`);
  const noProfile = await runCli(['plan', '--profile', 'nope', '--endpoint-url', endpoint!], { env: { ...noS3, ...files } });
  t.equal(noProfile.code, 2, `an unknown profile is a configuration error\n${noProfile.stderr}`);
  t.notMatch(noProfile.stderr, /\n\s+at /, 'no stack trace');

  const verbose = await runCli(['report', '-v'], { env: env.env });
  t.equal(verbose.code, 0);
  t.match(verbose.stderr, /^settings: \{.*"ledgerSchema":"bucket_migrate"/m, '-v prints the settings in effect');

  const dry = await runCli(['execute', '--dry-run', '3', '--max-rps', '10', '--batch-size', '10'], { env: env.env });
  t.equal(dry.code, 0, dry.stderr);
  t.match(dry.stdout, /^dry run totals: 30 keys left \(pending 30\), \d+(\.\d)?(B|KiB|MiB) to copy$/m, 'keys and bytes');
  // One CopyObject per key, one listing of each batch's destinations, one DeleteObjects per batch.
  t.match(dry.stdout, /^  about 36 S3 requests \(CopyObject 30, ListObjectsV2 3, DeleteObjects 3\), not counting retries$/m);
  t.match(dry.stdout, /^  estimated AWS request cost \$0\.00 \(assumed S3 Standard prices: \$0\.005 per 1,000 COPY\/PUT\/POST\/LIST, \$0\.0004 per 1,000 GET\/HEAD, DELETE free/m);
  t.match(dry.stdout, /^  time at --max-rps 10: at least 3\.6s$/m);
});
