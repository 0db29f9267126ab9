// The audit log's paging: entries newest first (ids grow with time), older pages asked for with
// `before` = the oldest id held, the newest page asked for again after the member acts.

import type { AuditEntry } from '../api/types';

export const AUDIT_PAGE = 20;

export interface AuditPaging {
  /** Newest first, each id once. */
  entries: AuditEntry[];
  /** The server has nothing older than the last entry. */
  exhausted: boolean;
}

export const emptyAudit = (): AuditPaging => ({ entries: [], exhausted: false });

/** The query for the next older page. */
export function olderQuery(paging: AuditPaging, limit = AUDIT_PAGE): { before?: number; limit: number } {
  const oldest = paging.entries[paging.entries.length - 1];
  return oldest ? { before: oldest.id, limit } : { limit };
}

function merge(a: AuditEntry[], b: AuditEntry[]): AuditEntry[] {
  const byId = new Map<number, AuditEntry>();
  for (const entry of [...a, ...b]) byId.set(entry.id, entry);
  return [...byId.values()].sort((x, y) => y.id - x.id);
}

/** An older page arrived (asked with `olderQuery`): a short page means there is no more. */
export function withOlder(paging: AuditPaging, page: AuditEntry[], limit = AUDIT_PAGE): AuditPaging {
  return { entries: merge(paging.entries, page), exhausted: page.length < limit };
}

/**
 * The newest page arrived again. When all of it is newer than what is held and it is full, more
 * may have happened in between than one page holds: the held entries are dropped rather than
 * shown after a gap, and paging back starts over from the new page.
 */
export function withNewest(paging: AuditPaging, page: AuditEntry[], limit = AUDIT_PAGE): AuditPaging {
  if (paging.entries.length === 0) return withOlder(paging, page, limit);
  const heldNewest = paging.entries[0]?.id ?? 0;
  const gap = page.length >= limit && page.every((e) => e.id > heldNewest);
  if (gap) return { entries: merge([], page), exhausted: false };
  return { entries: merge(paging.entries, page), exhausted: paging.exhausted };
}
