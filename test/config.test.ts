import t from 'tap';
import { loadConfig, describeConfig, requireDatabaseUrl } from '../src/config/config.js';
import { redact, redactUrl, registerSecret } from '../src/config/redact.js';
import { parseTableName } from '../src/config/identifiers.js';
import { UsageError } from '../src/errors.js';
import { encodeCopySource } from '../src/s3/copy-source.js';
import { runCli } from './helpers/cli.js';

const base = { DATABASE_URL: 'postgres://app:s3cr3t-pw@db.example:5432/app' };

t.test('defaults come from the design', async (t) => {
  const config = loadConfig({}, base);
  t.same(config.source, { bucket: 'legacy-s3', prefix: 'image/' });
  t.same(config.target, { bucket: 'production-s3', prefix: 'avatar/' });
  t.same(config.table, { name: 'avatars' });
  t.equal(config.idColumn, 'id');
  t.equal(config.pathColumn, 'path');
  t.equal(config.ledgerSchema, 'bucket_migrate');
  t.equal(config.s3.endpoint, undefined);
  t.equal(config.s3.forcePathStyle, false);
});

t.test('flags win over the environment, which wins over defaults', async (t) => {
  const env = { ...base, SOURCE_BUCKET: 'env-bucket', TARGET_PREFIX: 'env/', S3_ENDPOINT: 'http://127.0.0.1:9000' };
  const config = loadConfig({ sourceBucket: 'flag-bucket', table: 'app.avatars' }, env);
  t.equal(config.source.bucket, 'flag-bucket');
  t.equal(config.target.prefix, 'env/');
  t.same(config.table, { schema: 'app', name: 'avatars' });
  t.equal(config.s3.forcePathStyle, true, 'an endpoint means path-style addressing');
  t.equal(config.s3.region, 'us-east-1', 'an endpoint with no region gets a default one');
});

t.test('every validation rule names its setting', async (t) => {
  const cases: Array<[Record<string, string>, Record<string, string>, RegExp]> = [
    [{}, { DATABASE_URL: 'not a url' }, /^DATABASE_URL is not a valid URL/],
    [{}, { DATABASE_URL: 'mysql://x@y/z' }, /^DATABASE_URL must start with postgres/],
    [{ databaseUrl: 'nope' }, base, /^--database-url is not a valid URL/],
    [{}, { ...base, S3_ENDPOINT: 'ftp://x' }, /^S3_ENDPOINT must start with http/],
    [{}, { ...base, S3_ENDPOINT: 'http//x' }, /^S3_ENDPOINT is not a valid URL/],
    [{ table: 'avatars; drop table x' }, base, /^--table must be a plain SQL identifier/],
    [{ table: 'a.b.c' }, base, /^--table must be "table" or "schema.table"/],
    [{ idColumn: 'id"' }, base, /^--id-column must be a plain SQL identifier/],
    [{}, { ...base, MIGRATE_PATH_COLUMN: '1path' }, /^MIGRATE_PATH_COLUMN must be a plain SQL identifier/],
    [{}, { ...base, SOURCE_PREFIX: '' }, /^SOURCE_PREFIX must not be empty/],
    [{ targetPrefix: 'avatar' }, base, /^--target-prefix must end with '\/'/],
    [{ sourcePrefix: '/image/' }, base, /^--source-prefix must not start with '\/'/],
    [{ sourceBucket: 'Bad_Bucket' }, base, /^--source-bucket must be a valid bucket name/],
    [{ sourceBucket: 'same', targetBucket: 'same', sourcePrefix: 'a/', targetPrefix: 'a/' }, base, /name the same location/],
    [{ sourceBucket: 'same', targetBucket: 'same', sourcePrefix: 'a/', targetPrefix: 'a/b/' }, base, /are nested in one bucket/],
    [{ sourceBucket: 'same', targetBucket: 'same', sourcePrefix: 'a/b/', targetPrefix: 'a/' }, base, /are nested in one bucket/],
  ];
  for (const [flags, env, message] of cases) {
    t.throws(() => loadConfig(flags, env), message, `${JSON.stringify(flags)} ${JSON.stringify(env)}`);
    try {
      loadConfig(flags, env);
    } catch (err) {
      t.ok(err instanceof UsageError, 'a usage error (exit 2)');
    }
  }
  t.throws(() => requireDatabaseUrl(loadConfig({}, {})), /^DATABASE_URL is not set/);
  t.doesNotThrow(() => loadConfig({ sourceBucket: 'same', targetBucket: 'same', sourcePrefix: 'image/', targetPrefix: 'avatar/' }, base));
  t.same(parseTableName('s.t', 'x'), { schema: 's', name: 't' });
});

t.test('secrets are redacted wherever a URL is echoed', async (t) => {
  t.equal(redactUrl('postgres://app:s3cr3t-pw@db:5432/app'), 'postgres://app:***@db:5432/app');
  t.equal(redactUrl('postgres://app@db/app'), 'postgres://app@db/app');
  t.equal(redactUrl('not a url://u:pw@h'), 'not a url://u:***@h');
  const config = loadConfig({}, base);
  t.equal(describeConfig(config).database, 'postgres://app:***@db.example:5432/app');
  t.notMatch(JSON.stringify(describeConfig(config)), /s3cr3t-pw/);
  registerSecret('AKIA-very-secret-key/+=');
  t.equal(redact('boom AKIA-very-secret-key/+= and AKIA-very-secret-key%2F%2B%3D'), 'boom *** and ***');
  t.equal(redact('see postgres://u:pw@h/db'), 'see postgres://u:***@h/db');
});

t.test('copy sources are encoded per segment, space as %20 and + as %2B', async (t) => {
  t.equal(encodeCopySource('b', 'image/with space+plus%?#;ü.png'), 'b/image/with%20space%2Bplus%25%3F%23%3B%C3%BC.png');
  t.equal(encodeCopySource('b', 'a/b/c'), 'b/a/b/c');
});

t.test('the CLI: help, version, and exit code 2 for bad configuration', async (t) => {
  const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '' };
  const help = await runCli(['--help'], { env });
  t.equal(help.code, 0);
  t.match(help.stdout, /Usage: bucket-migrate/);
  for (const command of ['plan', 'execute', 'report', 'validate', 'seed', 'migrate']) {
    const sub = await runCli([command, '--help'], { env });
    t.equal(sub.code, 0, `${command} --help exits 0`);
    t.match(sub.stdout, /Examples?:/, `${command} --help shows an example`);
    // report and migrate only read or create the ledger: they take only its flags.
    const flag = command === 'report' || command === 'migrate' ? /--ledger-schema <name>/ : /--table <name>/;
    t.match(sub.stdout, flag, `${command} --help lists the configuration flags`);
  }
  const version = await runCli(['--version'], { env });
  t.equal(version.code, 0);
  t.match(version.stdout, /^\d+\.\d+\.\d+/);

  const badUrl = await runCli(['plan'], { env: { ...env, DATABASE_URL: 'not a url' } });
  t.equal(badUrl.code, 2);
  t.match(badUrl.stderr, /DATABASE_URL/);
  t.notMatch(badUrl.stderr, /\n\s+at /, 'no stack trace');

  const injection = await runCli(['plan', '--table', 'avatars; drop table x'], { env: { ...env, DATABASE_URL: 'postgres://u@127.0.0.1/db' } });
  t.equal(injection.code, 2);
  t.match(injection.stderr, /--table must be a plain SQL identifier/);

  const noDb = await runCli(['execute'], { env });
  t.equal(noDb.code, 2);
  t.match(noDb.stderr, /DATABASE_URL is not set/);

  const unknown = await runCli(['plan', '--no-such-flag'], { env });
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /unknown option/);

  const range = await runCli(['execute', '--threads', '0'], { env });
  t.equal(range.code, 2);
  t.match(range.stderr, /--threads must be between 1 and 256/);

  const notNumber = await runCli(['execute', '--batch-size', 'lots'], { env });
  t.equal(notNumber.code, 2);
  t.match(notNumber.stderr, /--batch-size must be a whole number/);

  const secret = await runCli(['plan'], { env: { ...env, DATABASE_URL: 'postgres://u:hunter2-secret@127.0.0.1:1/db' } });
  t.equal(secret.code, 2, 'an unreachable database is a configuration error');
  t.match(secret.stderr, /cannot connect to the database at postgres:\/\/u:\*\*\*@127\.0\.0\.1:1\/db/);
  t.notMatch(secret.stdout + secret.stderr, /hunter2-secret/);
});
