// The chat as the client holds it, pure: confirmed messages oldest first without duplicates,
// and the member's own messages still on their way (matched to the stored ones by `clientId`).

import type { ChatMessage } from '../api/types';

export interface Pending {
  clientId: string;
  text: string;
  /** When it was written (ms): where it sorts until the server has it. */
  at: number;
  /** `sending`: on its way; `waiting`: will be sent again on reconnect; `failed`: refused. */
  state: 'sending' | 'waiting' | 'failed';
  error?: string;
}

export interface ChatRow {
  /** Stable across the pending → stored change, so the element is kept. */
  key: string;
  id: string | null;
  clientId: string | null;
  userId: string;
  displayName: string;
  message: string;
  timestamp: number;
  state: 'sent' | Pending['state'];
  error?: string;
}

export function compareMessages(a: ChatMessage, b: ChatMessage): number {
  if (a.timestamp !== b.timestamp) return a.timestamp - b.timestamp;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/**
 * Adds messages to a list: oldest first, one per id and one per clientId (a retried send the
 * server stored once can still reach us twice: the ack and the broadcast). Returns the same
 * array when nothing is new.
 */
export function mergeMessages(list: ChatMessage[], incoming: ChatMessage[]): ChatMessage[] {
  if (incoming.length === 0) return list;
  const ids = new Set<string>();
  const clientIds = new Set<string>();
  for (const m of list) {
    ids.add(m.id);
    if (m.clientId) clientIds.add(m.clientId);
  }
  const added: ChatMessage[] = [];
  for (const m of incoming) {
    if (ids.has(m.id) || (m.clientId && clientIds.has(m.clientId))) continue;
    ids.add(m.id);
    if (m.clientId) clientIds.add(m.clientId);
    added.push(m);
  }
  if (added.length === 0) return list;
  const last = list[list.length - 1];
  added.sort(compareMessages);
  const first = added[0];
  // The common case, a new message at the end: no re-sort.
  if (!last || (first && compareMessages(last, first) < 0)) return [...list, ...added];
  return [...list, ...added].sort(compareMessages);
}

/**
 * The newest page after a reconnect: merged when it overlaps what is held; when it does not (more
 * was missed than a page), it replaces the list so that no hole is shown; older pages load on
 * scroll again.
 */
export function absorbLatest(
  list: ChatMessage[],
  page: ChatMessage[],
  pageHasMore: boolean,
): { messages: ChatMessage[]; replaced: boolean } {
  const newestHeld = list[list.length - 1];
  const oldestNew = page[0];
  if (newestHeld && oldestNew && pageHasMore && compareMessages(newestHeld, oldestNew) < 0) {
    return { messages: mergeMessages([], page), replaced: true };
  }
  return { messages: mergeMessages(list, page), replaced: false };
}

/** What the log shows: the stored messages, then the member's own not yet stored. */
export function chatRows(
  messages: ChatMessage[],
  pending: Pending[],
  me: { id: string; displayName: string },
): ChatRow[] {
  const stored = new Set<string>();
  const rows: ChatRow[] = messages.map((m) => {
    if (m.clientId) stored.add(m.clientId);
    return {
      key: m.clientId ? `c:${m.clientId}` : `i:${m.id}`,
      id: m.id,
      clientId: m.clientId ?? null,
      userId: m.userId,
      displayName: m.displayName,
      message: m.message,
      timestamp: m.timestamp,
      state: 'sent',
    };
  });
  for (const p of pending) {
    if (stored.has(p.clientId)) continue;
    rows.push({
      key: `c:${p.clientId}`,
      id: null,
      clientId: p.clientId,
      userId: me.id,
      displayName: me.displayName,
      message: p.text,
      timestamp: p.at,
      state: p.state,
      error: p.error,
    });
  }
  return rows;
}

/** A client id for a message: a random UUID (also where `crypto.randomUUID` is missing: plain http). */
export function newClientId(): string {
  const c = globalThis.crypto;
  if (typeof c.randomUUID === 'function') return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = ((b[6] ?? 0) & 0x0f) | 0x40;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
