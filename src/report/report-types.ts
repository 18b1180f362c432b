/**
 * The shape of `bucket-migrate report --json`: one JSON document.
 *
 * Stability: fields are only ever added. A removal or a change of meaning
 * bumps `version`. Timestamps are ISO 8601 strings in UTC; durations are
 * seconds; rates are keys per second. docs/AUDIT.md documents every field.
 */
import type { LedgerState } from '../ledger/state-machine.js';

/** The terminal states whose keys the report lists one by one. */
export const LISTED_STATES = ['failed', 'conflict', 'missing', 'superseded', 'archived'] as const;
export type ListedState = (typeof LISTED_STATES)[number];

/** Keys listed per state. */
export const KEYS_PER_STATE = 20;
/** Error groups listed. */
export const TOP_ERRORS = 10;

/** One key of the ledger, as listed under `exceptions`. */
export interface ReportKey {
  id: number;
  srcKey: string;
  dstKey: string;
  /** Ids of the table rows that referenced the key when it was planned. */
  rowIds: string[];
  /** Ids of rows the application had changed since the plan (left alone). */
  rowsSkipped: string[];
  /** For `failed`: the state the key failed in. */
  failedState: string | null;
  attempts: number;
  failures: number;
  error: string | null;
  updatedAt: string;
}

/** One minute of activity. */
export interface MinuteActivity {
  /** Start of the minute. */
  minute: string;
  /** Keys copied in that minute. */
  copied: number;
  /** Keys whose source was deleted (state `done`) in that minute. */
  done: number;
  /** Keys that reached any terminal state in that minute. */
  settled: number;
}

/** A row of the runs table. */
export interface ReportRun {
  id: number;
  command: string;
  /** `running`, `succeeded`, `failed`, `interrupted`, or `lost` (its process was found gone and its leases released). */
  status: string;
  startedAt: string;
  finishedAt: string | null;
  /** finishedAt − startedAt, or null while (or if it died) running. */
  seconds: number | null;
  exitCode: number | null;
  host: string | null;
  pid: number | null;
  /**
   * For a run still marked `running` on this host: whether its process is
   * alive (false means it was killed without recording its end). Null when
   * it cannot be told (another host, or the run has finished).
   */
  processAlive: boolean | null;
  config: Record<string, unknown>;
  counts: Record<string, unknown>;
}

/** Everything `report` shows. */
export interface Report {
  version: 1;
  /** When the report was read (database clock). */
  generatedAt: string;
  ledgerSchema: string;
  /** What the ledger was planned for (null before the first plan). */
  ledgerConfig: { source: string; target: string; table: string; idColumn: string; pathColumn: string } | null;
  /** Keys in the ledger: the total to move. */
  planned: number;
  /** Keys per state; every state is present, 0 when empty. */
  states: Record<LedgerState, number>;
  progress: {
    /** Keys in a terminal state (every state but pending, copied, db_updated and reverting). */
    settled: number;
    /** Keys still to be worked on (pending, copied, db_updated; reverting, by revert). */
    remaining: number;
    /** settled / planned × 100 (100 for an empty ledger). */
    percentSettled: number;
    /** done / planned × 100. */
    percentDone: number;
  };
  throughput: {
    /** Start of the first execute run, or null if none ran. */
    since: string | null;
    /** Keys settled since then. */
    settled: number;
    /** From `since` to the last settle (to now while leases are held). */
    seconds: number;
    /** settled / seconds. */
    overallPerSecond: number;
    /** Keys settled per second over the last 5 minutes (or since `since`, if shorter). */
    currentPerSecond: number;
    /** remaining / currentPerSecond; 0 when nothing remains, null when nothing is moving. */
    etaSeconds: number | null;
    /** The last 60 minutes, oldest first, every minute present. */
    lastHour: MinuteActivity[];
  };
  /** How many keys were claimed how many times, ascending. */
  attempts: Array<{ attempts: number; keys: number }>;
  /** The most frequent last errors (quoted values blanked), with the states of their keys. */
  errors: Array<{ error: string; keys: number; states: Record<string, number> }>;
  /** The first keys (by ledger id) of each listed terminal state. */
  exceptions: Record<ListedState, { count: number; keys: ReportKey[] }>;
  leases: {
    /** Unsettled keys (forward or revert) leased to a worker whose lease has not expired. */
    held: number;
    /** Live keys whose lease expired: their worker died or stalled. */
    expired: number;
    owners: Array<{ owner: string; keys: number; lockedUntil: string; expired: boolean }>;
  };
  /** The last change to any ledger row, or null for an empty ledger. */
  lastActivityAt: string | null;
  /** Every row of the runs table, oldest first. */
  runs: ReportRun[];
}
