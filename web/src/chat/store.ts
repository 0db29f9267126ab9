// The team chat and presence: history over REST (newest page first, older pages on scroll),
// then live `chat_message` and `team_presence` events; refetched after every reconnect. Sending
// is optimistic: a message shows at once and is sent with a client-chosen id, again (same id) after
// a failure or a reconnect, until the server has it; the server stores and broadcasts it once.

import { batch, computed, effect, signal } from '@preact/signals';
import { api, errorMessage } from '../api/client';
import { session } from '../api/session';
import type { ChatMessage, PresenceName, PresenceUser } from '../api/types';
import { Refused, realtime } from '../realtime/socket';
import { absorbLatest, chatRows, mergeMessages, newClientId, type Pending } from './list';

const PAGE = 50;

export const messages = signal<ChatMessage[]>([]);
export const pending = signal<Pending[]>([]);
/** Older messages exist before the first one held. */
export const hasMore = signal(false);
export const loadingOlder = signal(false);
/** The first page has arrived. */
export const loaded = signal(false);
export const historyError = signal<string | null>(null);
export const presence = signal<PresenceUser[]>([]);
/** Messages from others that arrived while the Workshop was not open. */
export const unread = signal(0);

export const rows = computed(() => {
  const s = session.value;
  return chatRows(messages.value, pending.value, {
    id: s?.user.id ?? '',
    displayName: s?.user.displayName ?? 'You',
  });
});

/** The member's own status as the team sees it. */
export const myStatus = computed<PresenceName>(() => {
  const id = session.value?.user.id;
  const mine = presence.value.find((u) => u.userId === id);
  return mine && mine.status !== 'offline' ? mine.status : 'online';
});

/** The Workshop has been opened: from then on its data is kept fresh. */
let wanted = false;
let open = false;
/** Bumped on sign-out or a team change: answers for the old session are dropped. */
let epoch = 0;

function receive(incoming: ChatMessage[]) {
  const next = mergeMessages(messages.value, incoming);
  if (next === messages.value) return;
  const arrived = new Set(incoming.map((m) => m.clientId).filter((id): id is string => !!id));
  batch(() => {
    messages.value = next;
    if (arrived.size && pending.value.some((p) => arrived.has(p.clientId))) {
      pending.value = pending.value.filter((p) => !arrived.has(p.clientId));
    }
  });
}

export async function loadLatest(): Promise<void> {
  const at = epoch;
  const { data, error } = await api.GET('/api/chat/history', { params: { query: { limit: PAGE } } });
  if (at !== epoch) return;
  if (!data) {
    historyError.value = errorMessage(error);
    return;
  }
  const { messages: next, replaced } = absorbLatest(messages.value, data.messages, data.hasMore);
  batch(() => {
    historyError.value = null;
    if (replaced || !loaded.value) hasMore.value = data.hasMore;
    loaded.value = true;
    if (next !== messages.value) {
      const arrived = new Set(data.messages.map((m) => m.clientId).filter(Boolean));
      messages.value = next;
      pending.value = pending.value.filter((p) => !arrived.has(p.clientId));
    }
  });
}

/**
 * The page before the oldest message held. `beforeApply` runs just before the list changes (the
 * view notes its scroll anchor there).
 */
export async function loadOlder(beforeApply?: () => void): Promise<void> {
  const oldest = messages.value[0];
  if (!oldest || !hasMore.value || loadingOlder.value) return;
  const at = epoch;
  loadingOlder.value = true;
  try {
    const { data, error } = await api.GET('/api/chat/history', {
      params: { query: { before: oldest.timestamp, beforeId: oldest.id, limit: PAGE } },
    });
    if (at !== epoch) return;
    if (!data) {
      historyError.value = errorMessage(error);
      return;
    }
    beforeApply?.();
    batch(() => {
      historyError.value = null;
      hasMore.value = data.hasMore;
      messages.value = mergeMessages(messages.value, data.messages);
    });
  } finally {
    if (at === epoch) loadingOlder.value = false;
  }
}

export async function loadPresence(): Promise<void> {
  const at = epoch;
  const { data } = await api.GET('/api/team/presence');
  if (data && at === epoch) presence.value = data.users;
}

/** Sets the member's status (online, away, busy). */
export async function setMyStatus(status: PresenceName): Promise<void> {
  const ack = await realtime.emit<{ ok: true; users?: PresenceUser[] }>('presence_update', { status });
  if (ack.users) presence.value = ack.users;
}

// Sending

const inFlight = new Set<string>();
const retryTimers = new Map<string, ReturnType<typeof setTimeout>>();
const attempts = new Map<string, number>();
/** Refusals worth trying again later; any other is shown with Retry and Discard. */
const TRANSIENT = new Set(['rate_limited', 'unavailable', 'internal', 'unauthenticated', 'unknown']);

function update(clientId: string, change: Partial<Pending>) {
  pending.value = pending.value.map((p) => (p.clientId === clientId ? { ...p, ...change } : p));
}

function forget(clientId: string) {
  clearTimeout(retryTimers.get(clientId));
  retryTimers.delete(clientId);
  attempts.delete(clientId);
  pending.value = pending.value.filter((p) => p.clientId !== clientId);
}

/** Writes a message: shown at once, sent until the server has it. */
export function send(text: string): void {
  const message = text.trim();
  if (!message) return;
  const clientId = newClientId();
  pending.value = [...pending.value, { clientId, text: message, at: Date.now(), state: 'sending' }];
  void deliver(clientId);
}

/**
 * A send with a chosen client id, exactly as a retry makes it (for tests and diagnosis:
 * `window.covibe.sendChat`); resolves once the server answered.
 */
export async function sendWithClientId(text: string, clientId: string): Promise<void> {
  const message = text.trim();
  if (!message) return;
  if (!pending.value.some((p) => p.clientId === clientId)) {
    pending.value = [...pending.value, { clientId, text: message, at: Date.now(), state: 'sending' }];
  }
  await deliver(clientId);
}

/** Sends a message again (after a refusal, by the member's choice). */
export function retry(clientId: string): void {
  attempts.delete(clientId);
  void deliver(clientId);
}

export function discard(clientId: string): void {
  forget(clientId);
}

async function deliver(clientId: string): Promise<void> {
  const item = pending.value.find((p) => p.clientId === clientId);
  if (!item || inFlight.has(clientId)) return;
  clearTimeout(retryTimers.get(clientId));
  retryTimers.delete(clientId);
  if (realtime.connection.value !== 'online') {
    // Sent when the connection is back (onJoined).
    update(clientId, { state: 'waiting', error: undefined });
    return;
  }
  const at = epoch;
  inFlight.add(clientId);
  update(clientId, { state: 'sending', error: undefined });
  try {
    const ack = await realtime.emit<{ ok: true; message: ChatMessage }>(
      'chat_message',
      { message: item.text, clientId },
      10_000,
    );
    if (at !== epoch) return;
    receive([{ ...ack.message, clientId: ack.message.clientId ?? clientId }]);
    forget(clientId);
  } catch (err) {
    if (at !== epoch || !pending.value.some((p) => p.clientId === clientId)) return;
    if (err instanceof Refused && !TRANSIENT.has(err.code)) {
      update(clientId, { state: 'failed', error: err.message });
      return;
    }
    update(clientId, { state: 'waiting', error: undefined });
    if (realtime.connection.value === 'online') {
      const n = (attempts.get(clientId) ?? 0) + 1;
      attempts.set(clientId, n);
      const wait =
        err instanceof Refused && err.retryAfter ? err.retryAfter * 1000 : Math.min(30_000, 1000 * 2 ** n);
      retryTimers.set(
        clientId,
        setTimeout(() => void deliver(clientId), wait),
      );
    }
  } finally {
    inFlight.delete(clientId);
  }
}

function reset() {
  epoch++;
  for (const timer of retryTimers.values()) clearTimeout(timer);
  retryTimers.clear();
  attempts.clear();
  batch(() => {
    messages.value = [];
    pending.value = [];
    hasMore.value = false;
    loaded.value = false;
    historyError.value = null;
    presence.value = [];
    unread.value = 0;
  });
  wanted = false;
}

/** The Workshop is on screen (`true`) or left (`false`). */
export function workshopShown(shown: boolean): void {
  open = shown;
  if (!shown) return;
  unread.value = 0;
  if (!wanted) {
    wanted = true;
    void loadLatest().catch(() => {});
    void loadPresence().catch(() => {});
  }
}

let started = false;
/** Subscribes to the team's chat events (once, from main). */
export function startChat(): void {
  if (started) return;
  started = true;
  realtime.on<ChatMessage>('chat_message', (m) => {
    if (!m || typeof m.id !== 'string') return;
    const known = messages.value.some((x) => x.id === m.id);
    receive([m]);
    if (!known && !open && m.userId !== session.value?.user.id) unread.value += 1;
  });
  realtime.on<{ users?: PresenceUser[] }>('team_presence', (p) => {
    if (Array.isArray(p?.users)) presence.value = p.users;
  });
  realtime.onJoined(() => {
    if (wanted) {
      void loadLatest().catch(() => {});
      void loadPresence().catch(() => {});
    }
    for (const p of pending.value) if (p.state !== 'failed') void deliver(p.clientId);
  });
  if (typeof window !== 'undefined') {
    const w = window as unknown as { covibe?: Record<string, unknown> };
    w.covibe = { ...(w.covibe ?? {}), sendChat: sendWithClientId };
  }
  let who: string | null = null;
  effect(() => {
    const s = session.value;
    const key = s ? `${s.team.id}/${s.user.id}` : null;
    if (key !== who) {
      if (who !== null) reset();
      who = key;
    }
  });
}
