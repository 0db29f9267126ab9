// The team preview: read from the API when the Showcase opens, kept up to date by
// `preview_updated` events, and remembered per team across reloads (shown offline). Whichever
// copy changed last wins: an event that overtakes a slower `GET /api/preview` is not undone.

import { effect, signal } from '@preact/signals';
import { api, errorMessage } from '../api/client';
import { session } from '../api/session';
import { realtime } from '../realtime/socket';
import { fromView, newer, parsePreview, type Preview } from './current';

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

/** Takes `incoming` unless the preview held is later, and remembers the result. */
function take(teamId: string, incoming: Preview): void {
  const next = newer(preview.value, incoming);
  if (next === preview.value) return;
  preview.value = next;
  try {
    localStorage.setItem(key(teamId), JSON.stringify(next));
  } catch {
    // Kept for this page only.
  }
}

/** Reads the preview from the API; resolves to the error's text, or `null` when it was read. */
export async function loadPreview(): Promise<string | null> {
  const teamId = session.value?.team.id;
  if (!teamId) return null;
  const { data, error } = await api.GET('/api/preview');
  // Signed out, or into another team, while the answer was on its way.
  if (session.value?.team.id !== teamId) return null;
  if (!data) return errorMessage(error);
  take(teamId, fromView(data.preview));
  return null;
}

let started = false;
export function startPreview(): void {
  if (started) return;
  started = true;
  realtime.on('preview_updated', (data) => {
    const next = parsePreview(data);
    const teamId = session.value?.team.id;
    if (next && teamId) take(teamId, next);
  });
  effect(() => {
    const teamId = session.value?.team.id;
    preview.value = teamId ? read(teamId) : null;
  });
}
