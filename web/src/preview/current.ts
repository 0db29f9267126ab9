// The team preview as data: a `preview_updated` event or a `GET /api/preview` answer, checked,
// and which of two copies is the current one (the later `at` wins, whichever way it came).

import type { PreviewView } from '../api/types';

export interface Preview {
  url: string;
  commit: string;
  /** `none` before the first push, `pending`, `deploying`, `live` or `failed`. */
  status: string;
  /** The pushed ref and repository: only events carry them. */
  ref?: string;
  repository?: string;
  /** When the preview changed (ms since the epoch; 0 = never); unknown for an event without it. */
  at?: number;
}

/** A `preview_updated` payload, checked. */
export function parsePreview(data: unknown): Preview | null {
  if (!data || typeof data !== 'object') return null;
  const d = data as Record<string, unknown>;
  const text = (v: unknown) => (typeof v === 'string' ? v : '');
  const at = typeof d.at === 'number' ? d.at : typeof d.updatedAt === 'number' ? d.updatedAt : undefined;
  return {
    url: text(d.url),
    commit: text(d.commit),
    status: text(d.status),
    ref: text(d.ref) || undefined,
    repository: text(d.repository) || undefined,
    at,
  };
}

/** The API's view of the preview. */
export function fromView(view: PreviewView): Preview {
  return { url: view.url, commit: view.commit, status: view.status, at: view.updatedAt };
}

/**
 * The current preview of `current` and `incoming`: `incoming` unless `current` is strictly later
 * (a live event that overtook a slower `GET`). A copy without a time (an event from a gateway
 * that sends none) counts as the latest. The API's view has no ref or repository: an event's are
 * kept while the commit is the same.
 */
export function newer(current: Preview | null, incoming: Preview): Preview {
  if (!current) return incoming;
  if (current.at !== undefined && incoming.at !== undefined && current.at > incoming.at) return current;
  if (current.commit !== incoming.commit) return incoming;
  return { ...incoming, ref: incoming.ref ?? current.ref, repository: incoming.repository ?? current.repository };
}

/** Nothing was ever pushed: no commit, no address. */
export function isEmpty(p: Preview | null): boolean {
  return !p || p.status === 'none' || (!p.commit && !p.url);
}

/** A commit as people quote it. */
export const shortCommit = (commit: string): string => commit.slice(0, 7);

export type Tone = 'ok' | 'busy' | 'bad' | 'idle';

/** How a status reads, and its colour. */
export function statusOf(status: string): { label: string; tone: Tone } {
  switch (status) {
    case 'live':
      return { label: 'live', tone: 'ok' };
    case 'pending':
      return { label: 'waiting to deploy', tone: 'busy' };
    case 'deploying':
      return { label: 'deploying', tone: 'busy' };
    case 'failed':
      return { label: 'failed', tone: 'bad' };
    case 'none':
    case '':
      return { label: 'nothing pushed yet', tone: 'idle' };
    default:
      return { label: status, tone: 'idle' };
  }
}

/**
 * Only http(s) previews are framed (never `javascript:` or `data:`); a path (the gateway's
 * `/preview/<team>/`) is on this origin.
 */
export function frameable(url: string): boolean {
  if (url.startsWith('/') && !url.startsWith('//')) return true;
  try {
    const u = new URL(url);
    return u.protocol === 'https:' || u.protocol === 'http:';
  } catch {
    return false;
  }
}
