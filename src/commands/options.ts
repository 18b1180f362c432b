import os from 'node:os';
import { Command, Option } from 'commander';
import { SETTINGS, loadConfig, type MigrateConfig, type SettingValues } from '../config/config.js';
import { UsageError } from '../errors.js';

/** `--log-format`, on every command: with `json`, stderr carries only JSON lines. */
export function logFormatOption(): Option {
  return new Option('--log-format <format>', 'stderr as text, or one JSON object per line (json: nothing else is written to stderr)').choices(['text', 'json']).default('text');
}

/** Adds a flag for every environment setting (see `SETTINGS`), and `--log-format`. */
export function withConfigOptions(command: Command): Command {
  command.addOption(logFormatOption());
  for (const setting of SETTINGS) {
    const def = 'def' in setting ? ` (env ${setting.env}, default ${setting.def})` : ` (env ${setting.env})`;
    command.addOption(new Option(setting.flag, `${setting.help}${def}`));
  }
  return command;
}

/** The validated configuration from a command's flags and the environment. */
export function configFrom(options: Record<string, unknown>): MigrateConfig {
  const flags: SettingValues = {};
  for (const setting of SETTINGS) {
    const value = options[setting.key];
    if (typeof value === 'string') flags[setting.key] = value;
  }
  return loadConfig(flags);
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

/** A parser for a byte size such as 64MiB, 5GiB or 1048576. */
export function sizeOption(flag: string): (value: string) => number {
  return (value: string) => {
    const match = /^(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?$/i.exec(value.trim());
    if (!match) throw new UsageError(`${flag} must be a size such as 1048576, 64MiB or 5GiB, got ${JSON.stringify(value)}`);
    const units: Record<string, number> = { b: 1, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, kb: 1e3, mb: 1e6, gb: 1e9 };
    return Number(match[1]) * (units[(match[2] ?? 'b').toLowerCase()] ?? 1);
  };
}

/** Cores on this machine: the default number of worker threads. */
export const CORES = Math.max(1, os.availableParallelism?.() ?? os.cpus().length);
