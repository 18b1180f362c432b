import os from 'node:os';
import { Command, Option } from 'commander';
import { SETTINGS, loadConfig, type MigrateConfig, type SettingGroup, type SettingValues } from '../config/config.js';
import { describeConfig } from '../config/config.js';
import { UsageError } from '../errors.js';
import { out } from '../util/output.js';

/** `--log-format`, on every command: with `json`, stderr carries only JSON lines. */
export function logFormatOption(): Option {
  return new Option('--log-format <format>', 'stderr as text, or one JSON object per line (json: nothing else is written to stderr)').choices(['text', 'json']).default('text');
}

/** `-v, --verbose`, on every command: the settings in effect, and the stack of an unexpected error. */
export function verboseOption(): Option {
  return new Option('-v, --verbose', 'also print the settings in effect (secrets redacted) and, for an unexpected error, its stack trace');
}

const ALL_GROUPS: readonly SettingGroup[] = ['ledger', 's3', 'table'];

/**
 * Adds a flag for every environment setting of `groups` (see `SETTINGS`),
 * `--log-format` and `-v/--verbose`. Commands that only read the ledger
 * take only the `ledger` group: a flag a command never uses is not offered.
 */
export function withConfigOptions(command: Command, groups: readonly SettingGroup[] = ALL_GROUPS): Command {
  command.addOption(logFormatOption());
  command.addOption(verboseOption());
  for (const setting of SETTINGS) {
    if (!groups.includes(setting.group)) continue;
    const def = 'def' in setting ? ` (env ${setting.env}, default ${setting.def})` : ` (env ${setting.env})`;
    command.addOption(new Option(setting.flag, `${setting.help}${def}`));
    // aws-cli's name is --endpoint-url; --s3-endpoint, the earlier one, still works.
    if (setting.key === 's3Endpoint') command.addOption(new Option('--s3-endpoint <url>').hideHelp());
  }
  return command;
}

/** The validated configuration from a command's flags and the environment. */
export function configFrom(options: Record<string, unknown>): MigrateConfig {
  const flags: SettingValues = {};
  for (const setting of SETTINGS) {
    const value = setting.key === 's3Endpoint' ? (options.endpointUrl ?? options.s3Endpoint) : options[setting.key];
    if (typeof value === 'string') flags[setting.key] = value;
  }
  const config = loadConfig(flags);
  if (options.verbose === true) out.info(`settings: ${JSON.stringify(describeConfig(config))}`, { settings: describeConfig(config) });
  return config;
}

/** A parser for an integer flag within [min, max], failing with a usage error naming the flag. */
export function intOption(flag: string, min: number, max: number): (value: string) => number {
  return (value: string) => {
    if (!/^-?\d+$/.test(value.trim())) throw new UsageError(`${flag} must be a whole number, got ${JSON.stringify(value)}`);
    const n = Number(value);
    if (n < min || n > max) throw new UsageError(`${flag} must be between ${min} and ${max}, got ${n}`);
    return n;
  };
}

const SIZE_UNITS: Record<string, number> = {
  b: 1,
  k: 1024, kb: 1e3, kib: 1024,
  m: 1024 ** 2, mb: 1e6, mib: 1024 ** 2,
  g: 1024 ** 3, gb: 1e9, gib: 1024 ** 3,
  t: 1024 ** 4, tb: 1e12, tib: 1024 ** 4,
};

/**
 * A parser for a byte size: 1048576, 64MiB, 5GiB, 1.5GiB, or rclone's
 * 256M / 5G (binary, as in rclone); KB/MB/GB are decimal.
 */
export function sizeOption(flag: string): (value: string) => number {
  return (value: string) => {
    const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
    const unit = SIZE_UNITS[(match?.[2] || 'b').toLowerCase()];
    if (!match || unit === undefined) throw new UsageError(`${flag} must be a size such as 1048576, 64MiB or 5GiB, got ${JSON.stringify(value)}`);
    const bytes = Math.round(Number(match[1]) * unit);
    if (!Number.isSafeInteger(bytes)) throw new UsageError(`${flag} is too large: ${JSON.stringify(value)}`);
    return bytes;
  };
}

/** Cores on this machine: the default number of worker threads. */
export const CORES = Math.max(1, os.availableParallelism?.() ?? os.cpus().length);
