import { describeConditionalSupport, type ConditionalSupport } from '../copy/conditional-support.js';
import { ALL_STATES } from '../ledger/state-machine.js';
import { formatDuration, formatRate } from '../util/output.js';
import { LISTED_STATES, type Report } from './report-types.js';

const pad = (label: string) => label.padEnd(14);

/** A local-time HH:MM for the per-minute line. */
function hhmm(isoTime: string): string {
  const d = new Date(isoTime);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

function ago(isoTime: string, now: string): string {
  return `${formatDuration(Math.max(0, (Date.parse(now) - Date.parse(isoTime)) / 1000))} ago`;
}

/** What an operator can do about the keys listed in a state, said once beside its heading. */
const STATE_HINTS: Partial<Record<(typeof LISTED_STATES)[number], string>> = {
  superseded: ' (copied, source kept: no row named the key at its commit; execute --finish-superseded deletes the sources no row names)',
};

/**
 * The report as text for a terminal: the figures first, then the lists. The
 * JSON form carries the same data and is what scripts should read.
 */
export function formatReport(report: Report): string[] {
  const lines: string[] = [];
  const c = report.ledgerConfig;
  lines.push(`bucket-migrate report: ledger ${report.ledgerSchema}, read at ${report.generatedAt}`);
  if (c) lines.push(`${pad('move')}${c.source} -> ${c.target} for ${c.table}(${c.idColumn}, ${c.pathColumn})`);
  const p = report.progress;
  lines.push(`${pad('planned')}${report.planned} keys`);
  lines.push(`${pad('settled')}${p.settled} (${p.percentSettled.toFixed(1)}%), done ${report.states.done} (${p.percentDone.toFixed(1)}%), remaining ${p.remaining}`);
  lines.push(`${pad('states')}${ALL_STATES.map((s) => `${s} ${report.states[s]}`).join(', ')}`);

  const t = report.throughput;
  if (t.since) {
    lines.push(
      `${pad('throughput')}${formatRate(t.overallPerSecond)} keys/s overall (${t.settled} keys in ${formatDuration(t.seconds)} since ${t.since}); ` +
        `${formatRate(t.currentPerSecond)}/s over the last 5 minutes`,
    );
  } else {
    lines.push(`${pad('throughput')}no execute run yet`);
  }
  lines.push(`${pad('ETA')}${t.etaSeconds === null ? 'unknown (nothing is moving)' : t.etaSeconds === 0 ? 'nothing left' : formatDuration(t.etaSeconds)}`);
  const active = t.lastHour.filter((m) => m.settled > 0 || m.copied > 0);
  lines.push(`${pad('last hour')}${active.length ? active.map((m) => `${hhmm(m.minute)} ${m.settled}`).join(', ') : 'no activity'} (keys settled per minute)`);
  lines.push(`${pad('attempts')}${report.attempts.map((a) => `${a.attempts}× ${a.keys}`).join(', ') || 'none'}`);
  const l = report.leases;
  lines.push(
    `${pad('leases')}${l.held} held, ${l.expired} expired` +
      (l.owners.length ? `: ${l.owners.map((o) => `${o.owner} (${o.keys}${o.expired ? ', expired' : ''})`).join(', ')}` : ''),
  );
  lines.push(`${pad('last activity')}${report.lastActivityAt ? `${report.lastActivityAt} (${ago(report.lastActivityAt, report.generatedAt)})` : 'none'}`);

  if (report.errors.length) {
    lines.push('', 'top errors (keys, by state):');
    for (const e of report.errors) {
      lines.push(`  ${String(e.keys).padStart(6)}  ${e.error}  [${Object.entries(e.states).map(([s, n]) => `${s} ${n}`).join(', ')}]`);
    }
  }
  for (const state of LISTED_STATES) {
    const { count, keys } = report.exceptions[state];
    if (count === 0) continue;
    lines.push('', `${state} (${count}${count > keys.length ? `, first ${keys.length}` : ''})${STATE_HINTS[state] ?? ''}:`);
    for (const k of keys) {
      const detail = [
        `rows ${k.rowIds.join(',') || '-'}`,
        `attempts ${k.attempts}`,
        k.failedState ? `failed in ${k.failedState}` : '',
        k.rowsSkipped.length ? `rows changed by the application ${k.rowsSkipped.join(',')}` : '',
        k.error ? `error: ${k.error}` : '',
      ].filter(Boolean);
      lines.push(`  #${k.id} ${k.srcKey} -> ${k.dstKey}  ${detail.join('; ')}`);
    }
  }
  lines.push('', `runs (${report.runs.length}):`);
  for (const r of report.runs) {
    const status =
      r.status === 'running' && r.processAlive === false
        ? 'running (process gone: killed or crashed)'
        : r.status === 'lost'
          ? 'lost (process gone: killed or crashed; its leases were released)'
          : r.status;
    const duration = r.seconds !== null ? formatDuration(r.seconds) : '-';
    const counts = typeof r.counts.keysDone === 'number' ? `, ${r.counts.keysDone} keys` : typeof r.counts.total === 'number' ? `, ${r.counts.total} keys planned` : '';
    lines.push(`  #${r.id} ${r.command.padEnd(12)} ${status}, exit ${r.exitCode ?? '-'}, started ${r.startedAt}, took ${duration}${counts}, ${r.host ?? '?'} pid ${r.pid ?? '?'}`);
  }
  if (report.runs.length === 0) lines.push('  none');
  // What the last execute's start-up probe found (see src/copy/probe-conditional.ts).
  const probed = [...report.runs].reverse().find((r) => r.command === 'execute' && r.config.ifNoneMatch)?.config.ifNoneMatch as ConditionalSupport | undefined;
  if (probed) lines.push('', `If-None-Match: ${describeConditionalSupport(probed)}`);
  return lines;
}
