import type { S3Client } from '@aws-sdk/client-s3';
import { describeConditionalSupport, probeConditionalWrites, type ConditionalSupport } from '../copy/probe-conditional.js';
import { UsageError } from '../errors.js';
import type { ExecuteConfig } from './execute-config.js';

/**
 * At the start of `execute`: probes whether the server honours
 * `If-None-Match: *` on copies (see `probeConditionalWrites`), says so in
 * one line, and refuses `--dest-check conditional` (exit 2, nothing
 * touched) unless it honours it on both CopyObject and
 * CompleteMultipartUpload: on a server that ignores it, that mode would
 * overwrite whatever sits at a destination. With `--overwrite` no copy
 * carries the header and nothing is probed. Returns the findings, recorded
 * with the run for `report`.
 */
export async function checkConditionalWrites(s3: S3Client, config: ExecuteConfig): Promise<ConditionalSupport | undefined> {
  if (config.overwrite || config.stage === 'delete-only') return undefined;
  const support = await probeConditionalWrites(s3, config.migrate.target);
  const honoured = support.copy === 'honoured' && support.complete === 'honoured';
  if (config.destCheck === 'conditional' && !honoured) {
    const answer = support.copy === 'ignored' ? 'ignores If-None-Match on CopyObject' : support.complete === 'ignored' ? 'ignores If-None-Match on CompleteMultipartUpload' : `could not be shown to honour If-None-Match (${support.detail ?? 'no answer'})`;
    throw new UsageError(`--dest-check conditional: the S3 server ${answer} (probed under ${config.migrate.target.prefix}), so existing destinations would be overwritten: use --dest-check list (the default) or head`);
  }
  return support;
}

/**
 * The start line saying what the probe found, printed by `execute` once
 * every check that can refuse the run has passed (a refusal stays one line).
 */
export function conditionalNote(support: ConditionalSupport): string {
  return `note: ${describeConditionalSupport(support)}${support.detail ? ` (${support.detail})` : ''}`;
}
