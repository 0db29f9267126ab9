// The team preview. The API has no route to read it yet: the client keeps the last
// `preview_updated` event (per team, across reloads) and shows that.

import { effect, signal } from '@preact/signals';
import { session } from '../api/session';
import { realtime } from '../realtime/socket';

export interface Preview {
  url: string;
  commit: string;
  status: string;
  ref?: string;
  repository?: string;
  /** When the preview changed (ms since the epoch). */
  at?: number;
}

export const preview = signal<Preview | null>(null);

const key = (teamId: string) => `covibe.preview.${teamId}`;

function read(teamId: string): Preview | null {
  try {
    const raw = localStorage.getItem(key(teamId));
    const value = raw ? (JSON.parse(raw) as Partial<Preview>) : null;
    return value && typeof value.url === 'string' ? (value as Preview) : null;
  } catch {
    return null;
  }
}

/** A `preview_updated` payload, checked. */
export function parsePreview(data: unknown): Preview | null {
  if (!data || typeof data !== 'object') return null;
  const d = data as Record<string, unknown>;
  const text = (v: unknown) => (typeof v === 'string' ? v : '');
  return {
    url: text(d.url),
    commit: text(d.commit),
    status: text(d.status),
    ref: text(d.ref) || undefined,
    repository: text(d.repository) || undefined,
    at: typeof d.at === 'number' ? d.at : undefined,
  };
}

/** Only http(s) previews are framed (never `javascript:` or `data:`). */
export function frameable(url: string): boolean {
  try {
    const u = new URL(url);
    return u.protocol === 'https:' || u.protocol === 'http:';
  } catch {
    return false;
  }
}

let started = false;
export function startPreview(): void {
  if (started) return;
  started = true;
  realtime.on('preview_updated', (data) => {
    const next = parsePreview(data);
    const teamId = session.value?.team.id;
    if (!next || !teamId) return;
    preview.value = next;
    try {
      localStorage.setItem(key(teamId), JSON.stringify(next));
    } catch {
      // Kept for this page only.
    }
  });
  effect(() => {
    const teamId = session.value?.team.id;
    preview.value = teamId ? read(teamId) : null;
  });
}
