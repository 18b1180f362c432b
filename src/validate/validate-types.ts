/**
 * The shape of `bucket-migrate validate --json`: one JSON document.
 *
 * Stability: fields are only ever added; a removal or a change of meaning
 * bumps `version`. Every check has the same fields, so a consumer can loop
 * over `checks` without knowing each one. docs/AUDIT.md documents them.
 */
import type { LedgerState } from '../ledger/state-machine.js';

/** The checks, in the order they run; `--checks` takes these names. */
export const CHECKS = {
  legacyRows: 'legacy-rows',
  targetObjects: 'target-objects',
  sourceEmpty: 'source-empty',
  ledgerSettled: 'ledger-settled',
} as const;
export type CheckKey = keyof typeof CHECKS;

/** Failing keys or rows named per check; the rest are counted. */
export const MAX_LISTED = 100;

/**
 * Ledger states whose keys were left where they were on purpose: the tool
 * refused them (failed, conflict, missing, archived), or the operator moved
 * them back (`revert`: reverted keys' rows name their source again, which is
 * where they belong until a new migration).
 */
export const EXCEPTION_STATES = ['failed', 'conflict', 'missing', 'archived', 'reverted'] as const;

/** One failing (or excepted) row or key. */
export interface Finding {
  /** The object key concerned: the row's path, or the listed key. */
  key: string;
  /** Why it fails (or why it is a known exception), one line. */
  reason: string;
  /** The table row, for checks about rows. */
  rowId?: string;
  /**
   * A row naming an object that does not exist (broken, not unfinished):
   * the object, as `s3://bucket/key` (the key as the row names it, whatever
   * its spelling; `key` is the path as stored).
   */
  missingObject?: string;
  /** The key's ledger row, when it has one. */
  ledgerId?: number;
  /** The key's ledger state; null when the ledger does not know the key. */
  state?: string | null;
  /** ledger-settled: the lease owner, if leased. */
  lockedBy?: string | null;
  /** ledger-settled: the lease expiry, if leased. */
  lockedUntil?: string | null;
}

/** The result of one check. */
export interface CheckResult {
  /** The check's name as `--checks` spells it. */
  name: string;
  /** What the check proves. */
  description: string;
  ok: boolean;
  /** Not run (left out by `--checks`); `ok` is then true. */
  skipped: boolean;
  /** One line for people. */
  summary: string;
  /** Rows or keys examined. */
  checked: number;
  failureCount: number;
  /** The first 100 failures. */
  failures: Finding[];
  /** Known exceptions (keys the ledger left on purpose): failures only with `--strict`. */
  exceptionCount: number;
  exceptions: Finding[];
  /** Figures particular to the check (see docs/AUDIT.md). */
  details: Record<string, unknown>;
}

/** Everything `validate` found. */
export interface ValidateResult {
  version: 1;
  /** True when every check that ran holds: the exit code is 0 exactly then. */
  ok: boolean;
  strict: boolean;
  checkedAt: string;
  ledgerSchema: string;
  source: string;
  target: string;
  table: string;
  /** Keys in the ledger, as in report. */
  planned: number;
  /** Keys per ledger state, as in report. */
  states: Record<LedgerState, number>;
  checks: Record<CheckKey, CheckResult>;
}

/**
 * Collects findings: keeps the first `MAX_LISTED` and counts the rest, so a
 * million failures cost no more memory than a hundred.
 */
export class Findings {
  readonly items: Finding[] = [];
  count = 0;
  constructor(private readonly cap = MAX_LISTED) {}

  add(finding: Finding): void {
    this.count += 1;
    if (this.items.length < this.cap) this.items.push(finding);
  }
}

/** Builds a check result; `ok` follows from the findings and `strict`. */
export function checkResult(
  key: CheckKey,
  description: string,
  parts: { summary: string; checked: number; failures: Findings; exceptions?: Findings; strict: boolean; details?: Record<string, unknown> },
): CheckResult {
  const exceptions = parts.exceptions ?? new Findings();
  return {
    name: CHECKS[key],
    description,
    ok: parts.failures.count === 0 && (!parts.strict || exceptions.count === 0),
    skipped: false,
    summary: parts.summary,
    checked: parts.checked,
    failureCount: parts.failures.count,
    failures: parts.failures.items,
    exceptionCount: exceptions.count,
    exceptions: exceptions.items,
    details: parts.details ?? {},
  };
}

/** `1 row`, `2 rows`: summaries read as sentences. */
export function plural(n: number, noun: string, nouns = `${noun}s`): string {
  return `${n} ${n === 1 ? noun : nouns}`;
}

/** The result of a check left out by `--checks`. */
export function skippedCheck(key: CheckKey, description: string): CheckResult {
  return {
    name: CHECKS[key],
    description,
    ok: true,
    skipped: true,
    summary: 'skipped (not in --checks)',
    checked: 0,
    failureCount: 0,
    failures: [],
    exceptionCount: 0,
    exceptions: [],
    details: {},
  };
}
