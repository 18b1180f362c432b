import { CHECKS, type CheckKey, type Finding, type ValidateResult } from './validate-types.js';

function describe(finding: Finding): string {
  // A broken row's reason is a whole sentence naming the row and the object.
  if (finding.missingObject !== undefined) return finding.reason;
  const where = finding.rowId !== undefined ? `row ${finding.rowId} ${finding.key}` : finding.key;
  return `${where}: ${finding.reason}`;
}

/**
 * The validation as text: one line per check, then the failures it found
 * (the first 100 each, then a count) and its known exceptions.
 */
export function formatValidate(result: ValidateResult): string[] {
  const lines: string[] = [];
  const ran = Object.values(result.checks).filter((c) => !c.skipped);
  const failed = ran.filter((c) => !c.ok);
  lines.push(
    `validate: ${result.ok ? 'OK' : 'FAILED'}: ${ran.length - failed.length} of ${ran.length} checks hold` +
      ` (${result.source} -> ${result.target}, table ${result.table}, ${result.planned} keys planned${result.strict ? ', --strict' : ''})`,
  );
  for (const key of Object.keys(CHECKS) as CheckKey[]) {
    const check = result.checks[key];
    const mark = check.skipped ? 'skip' : check.ok ? ' ok ' : 'FAIL';
    lines.push(`[${mark}] ${check.name}: ${check.summary}`);
    for (const f of check.failures) lines.push(`    ${describe(f)}`);
    if (check.failureCount > check.failures.length) lines.push(`    ... and ${check.failureCount - check.failures.length} more`);
    if (check.exceptionCount > 0) {
      lines.push(`    known exceptions${result.strict ? ' (failing with --strict)' : ''}:`);
      for (const f of check.exceptions) lines.push(`      ${describe(f)}`);
      if (check.exceptionCount > check.exceptions.length) lines.push(`      ... and ${check.exceptionCount - check.exceptions.length} more`);
    }
  }
  return lines;
}
