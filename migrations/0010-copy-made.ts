import { sql, type Kysely, type Migration } from 'kysely';

/**
 * `copy_made`: whether the object at a key's destination is this
 * migration's copy of its source. Revert deletes a target only when it is;
 * a target that was there before (execute found the same object and copied
 * nothing) may be named by rows the tool never saw, so it is kept.
 *
 * Until now that was read from the copy's own metadata (provenance, written
 * with `MetadataDirective: REPLACE`, which needs a HEAD of the source per
 * key). A copy made with the COPY directive carries no provenance, so the
 * fact moves here, set by the statement that records `copied`:
 * - true: this run's CopyObject (or multipart copy) wrote the object, or the
 *   existing destination carries provenance naming this source;
 * - false: the destination was found there, without such provenance (a
 *   crash between a copy and that statement ends here too: the target is
 *   then kept by revert, an orphan copy, never a row without an object);
 * - null: recorded before this migration: revert reads the target's
 *   metadata, as it always did.
 *
 * A nullable boolean without a default: adding it rewrites nothing.
 */
export function copyMadeMigration(schema: string): Migration {
  const ledger = sql.id(schema, 'migration_ledger');
  return {
    async up(db: Kysely<unknown>) {
      await sql`alter table ${ledger} add column copy_made boolean`.execute(db);
      await sql`comment on column ${ledger}.copy_made is ${sql.lit(
        'true: this migration made the destination object (revert may delete it); false: found there, kept by revert; null: recorded before migration 0010, revert reads the target metadata',
      )}`.execute(db);
    },
    async down(db: Kysely<unknown>) {
      await sql`alter table ${ledger} drop column copy_made`.execute(db);
    },
  };
}
