import { UsageError } from '../errors.js';
import { parseIdentifier, parseTableName, type TableName } from './identifiers.js';
import { redactUrl, registerSecret } from './redact.js';

/**
 * Every setting that comes from the environment (or `.env`) and may be
 * overridden by a flag. This table is the single place that names them: the
 * CLI builds its flags from it, the README's configuration table mirrors it.
 */
export const SETTINGS = [
  { key: 'databaseUrl', env: 'DATABASE_URL', flag: '--database-url <url>', help: 'Postgres connection URL', group: 'ledger' },
  { key: 's3Endpoint', env: 'S3_ENDPOINT', flag: '--endpoint-url <url>', help: 'S3-compatible endpoint, path-style (alias --s3-endpoint); unset for AWS', group: 's3' },
  { key: 'region', env: 'AWS_REGION', flag: '--region <region>', help: 'AWS region (default: the SDK chain; us-east-1 with --endpoint-url)', group: 's3' },
  { key: 'profile', env: 'AWS_PROFILE', flag: '--profile <name>', help: 'AWS profile from ~/.aws/config and ~/.aws/credentials (default: the SDK chain)', group: 's3' },
  { key: 'sourceBucket', env: 'SOURCE_BUCKET', flag: '--source-bucket <bucket>', help: 'bucket holding the legacy objects', def: 'legacy-s3', group: 's3' },
  { key: 'sourcePrefix', env: 'SOURCE_PREFIX', flag: '--source-prefix <prefix>', help: 'leading key prefix to move from', def: 'image/', group: 's3' },
  { key: 'targetBucket', env: 'TARGET_BUCKET', flag: '--target-bucket <bucket>', help: 'bucket to move the objects to', def: 'production-s3', group: 's3' },
  { key: 'targetPrefix', env: 'TARGET_PREFIX', flag: '--target-prefix <prefix>', help: 'leading key prefix to move to', def: 'avatar/', group: 's3' },
  { key: 'table', env: 'MIGRATE_TABLE', flag: '--table <name>', help: 'table holding the paths (schema-qualified allowed)', def: 'avatars', group: 'table' },
  { key: 'idColumn', env: 'MIGRATE_ID_COLUMN', flag: '--id-column <name>', help: "the table's primary key column", def: 'id', group: 'table' },
  { key: 'pathColumn', env: 'MIGRATE_PATH_COLUMN', flag: '--path-column <name>', help: 'the column holding object keys', def: 'path', group: 'table' },
  { key: 'ledgerSchema', env: 'LEDGER_SCHEMA', flag: '--ledger-schema <name>', help: "schema for the tool's ledger and runs tables", def: 'bucket_migrate', group: 'ledger' },
] as const;

export type SettingKey = (typeof SETTINGS)[number]['key'];
/** What a setting is about: commands that only read the ledger (report, migrate) take only `ledger` flags. */
export type SettingGroup = (typeof SETTINGS)[number]['group'];
export type SettingValues = Partial<Record<SettingKey, string>>;

/** One S3 location: a bucket and a key prefix ending in `/`. */
export interface LocationConfig {
  bucket: string;
  prefix: string;
}

/** How to reach S3. Credentials come from the AWS SDK's default chain. */
export interface S3Config {
  endpoint?: string;
  region?: string;
  /** A named AWS profile (`--profile`, AWS_PROFILE); the SDK reads it from ~/.aws. */
  profile?: string;
  /** Path-style addressing, needed by most S3-compatible servers. */
  forcePathStyle: boolean;
}

/** The validated configuration shared by every command. */
export interface MigrateConfig {
  /** Postgres URL; the password is only ever printed through `redactUrl`. */
  databaseUrl?: string;
  s3: S3Config;
  source: LocationConfig;
  target: LocationConfig;
  table: TableName;
  idColumn: string;
  pathColumn: string;
  ledgerSchema: string;
}

/**
 * Merges flags over the environment over defaults, then validates. Every
 * failure is a `UsageError` naming the setting, so the CLI exits 2 with one
 * line.
 */
export function loadConfig(flags: SettingValues, env: NodeJS.ProcessEnv = process.env): MigrateConfig {
  const value = (key: SettingKey): string | undefined => {
    const setting = SETTINGS.find((s) => s.key === key)!;
    const raw = flags[key] ?? env[setting.env] ?? ('def' in setting ? setting.def : undefined);
    // An empty optional setting means "unset"; an empty required one is an error below.
    return raw === '' && !('def' in setting) ? undefined : raw;
  };
  const name = (key: SettingKey): string => {
    const setting = SETTINGS.find((s) => s.key === key)!;
    return flags[key] !== undefined ? setting.flag.split(' ')[0]! : setting.env;
  };

  registerSecret(env.AWS_SECRET_ACCESS_KEY);
  registerSecret(env.AWS_SESSION_TOKEN);

  const databaseUrl = value('databaseUrl');
  if (databaseUrl !== undefined) validateDatabaseUrl(databaseUrl, name('databaseUrl'));

  const endpoint = value('s3Endpoint');
  if (endpoint !== undefined) validateHttpUrl(endpoint, name('s3Endpoint'));

  const source = {
    bucket: validateBucket(value('sourceBucket') ?? '', name('sourceBucket')),
    prefix: validatePrefix(value('sourcePrefix') ?? '', name('sourcePrefix')),
  };
  const target = {
    bucket: validateBucket(value('targetBucket') ?? '', name('targetBucket')),
    prefix: validatePrefix(value('targetPrefix') ?? '', name('targetPrefix')),
  };
  if (source.bucket === target.bucket) {
    if (source.prefix === target.prefix) {
      throw new UsageError(
        `SOURCE_BUCKET/SOURCE_PREFIX and TARGET_BUCKET/TARGET_PREFIX name the same location s3://${source.bucket}/${source.prefix}: set a different target`,
      );
    }
    if (target.prefix.startsWith(source.prefix) || source.prefix.startsWith(target.prefix)) {
      throw new UsageError(
        `SOURCE_PREFIX ${source.prefix} and TARGET_PREFIX ${target.prefix} are nested in one bucket, so moved keys would be planned again: choose prefixes that do not contain each other`,
      );
    }
  }

  return {
    databaseUrl,
    s3: {
      endpoint,
      region: value('region') ?? env.AWS_DEFAULT_REGION ?? (endpoint ? 'us-east-1' : undefined),
      profile: value('profile'),
      forcePathStyle: endpoint !== undefined,
    },
    source,
    target,
    table: parseTableName(value('table') ?? '', name('table')),
    idColumn: parseIdentifier(value('idColumn') ?? '', name('idColumn')),
    pathColumn: parseIdentifier(value('pathColumn') ?? '', name('pathColumn')),
    ledgerSchema: parseIdentifier(value('ledgerSchema') ?? '', name('ledgerSchema')),
  };
}

/** The database URL, or a usage error saying how to provide one. */
export function requireDatabaseUrl(config: MigrateConfig): string {
  if (!config.databaseUrl) {
    throw new UsageError('DATABASE_URL is not set: set it in the environment or .env, or pass --database-url');
  }
  return config.databaseUrl;
}

function validateDatabaseUrl(url: string, setting: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`${setting} is not a valid URL (${redactUrl(url)}): expected postgres://user@host:5432/database`);
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new UsageError(`${setting} must start with postgres:// or postgresql://, got ${redactUrl(url)}`);
  }
  if (parsed.password) registerSecret(decodeURIComponent(parsed.password));
}

function validateHttpUrl(url: string, setting: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`${setting} is not a valid URL: expected http(s)://host:port`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new UsageError(`${setting} must start with http:// or https://, got ${redactUrl(url)}`);
  }
}

// S3 bucket naming rules, simplified to what matters for a typo check.
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

function validateBucket(bucket: string, setting: string): string {
  if (!BUCKET.test(bucket)) {
    throw new UsageError(`${setting} must be a valid bucket name (3-63 of a-z, 0-9, '.', '-'), got ${JSON.stringify(bucket)}`);
  }
  return bucket;
}

function validatePrefix(prefix: string, setting: string): string {
  if (prefix === '') throw new UsageError(`${setting} must not be empty: give a key prefix ending in '/', such as image/`);
  if (!prefix.endsWith('/')) throw new UsageError(`${setting} must end with '/', got ${JSON.stringify(prefix)}`);
  if (prefix.startsWith('/')) throw new UsageError(`${setting} must not start with '/', got ${JSON.stringify(prefix)}`);
  if (Buffer.byteLength(prefix) > 512) throw new UsageError(`${setting} is longer than 512 bytes`);
  return prefix;
}

/** The configuration as stored in the runs table and printed: no secrets. */
export function describeConfig(config: MigrateConfig): Record<string, unknown> {
  return {
    database: config.databaseUrl ? redactUrl(config.databaseUrl) : null,
    s3Endpoint: config.s3.endpoint ? redactUrl(config.s3.endpoint) : null,
    region: config.s3.region ?? null,
    profile: config.s3.profile ?? null,
    source: `s3://${config.source.bucket}/${config.source.prefix}`,
    target: `s3://${config.target.bucket}/${config.target.prefix}`,
    table: config.table.schema ? `${config.table.schema}.${config.table.name}` : config.table.name,
    idColumn: config.idColumn,
    pathColumn: config.pathColumn,
    ledgerSchema: config.ledgerSchema,
  };
}
