import { describe, expect, it } from 'vitest';
import type { ChatMessage } from '../src/api/types';
import { absorbLatest, chatRows, mergeMessages, newClientId, type Pending } from '../src/chat/list';

const msg = (id: string, timestamp: number, extra: Partial<ChatMessage> = {}): ChatMessage => ({
  id,
  userId: 'u1',
  displayName: 'Ann',
  message: `message ${id}`,
  timestamp,
  clientId: null,
  ...extra,
});
const me = { id: 'u1', displayName: 'Ann' };

describe('mergeMessages', () => {
  it('keeps messages oldest first, whatever order they arrive in', () => {
    const list = mergeMessages([], [msg('c', 30), msg('a', 10), msg('b', 20)]);
    expect(list.map((m) => m.id)).toEqual(['a', 'b', 'c']);
    const older = mergeMessages(list, [msg('z', 5)]);
    expect(older.map((m) => m.id)).toEqual(['z', 'a', 'b', 'c']);
  });

  it('orders messages of the same millisecond by id', () => {
    const list = mergeMessages([], [msg('b', 10), msg('a', 10)]);
    expect(list.map((m) => m.id)).toEqual(['a', 'b']);
  });

  it('drops a message it holds already, by id', () => {
    const list = mergeMessages([], [msg('a', 10)]);
    expect(mergeMessages(list, [msg('a', 10)])).toBe(list);
    expect(mergeMessages(list, [msg('b', 20), msg('b', 20)]).map((m) => m.id)).toEqual(['a', 'b']);
  });

  it('drops a second copy with the same clientId (the ack and the broadcast of one send)', () => {
    const list = mergeMessages([], [msg('a', 10, { clientId: 'c1' })]);
    const again = mergeMessages(list, [msg('a2', 11, { clientId: 'c1' })]);
    expect(again).toBe(list);
  });

  it('appends new messages without re-sorting what is held', () => {
    const list = mergeMessages([], [msg('a', 10), msg('b', 20)]);
    const next = mergeMessages(list, [msg('c', 30)]);
    expect(next.slice(0, 2)).toEqual(list);
    expect(next).toHaveLength(3);
  });
});

describe('absorbLatest', () => {
  it('merges a newest page that overlaps what is held', () => {
    const held = mergeMessages([], [msg('a', 10), msg('b', 20)]);
    const { messages, replaced } = absorbLatest(held, [msg('b', 20), msg('c', 30)], true);
    expect(replaced).toBe(false);
    expect(messages.map((m) => m.id)).toEqual(['a', 'b', 'c']);
  });

  it('replaces the list when more than a page was missed (no hole on screen)', () => {
    const held = mergeMessages([], [msg('a', 10), msg('b', 20)]);
    const { messages, replaced } = absorbLatest(held, [msg('x', 100), msg('y', 110)], true);
    expect(replaced).toBe(true);
    expect(messages.map((m) => m.id)).toEqual(['x', 'y']);
  });

  it('merges when the page is all there is, even without overlap', () => {
    const held = mergeMessages([], [msg('a', 10)]);
    const { messages, replaced } = absorbLatest(held, [msg('x', 100)], false);
    expect(replaced).toBe(false);
    expect(messages.map((m) => m.id)).toEqual(['a', 'x']);
  });
});

describe('chatRows', () => {
  const pending = (clientId: string, at: number, state: Pending['state'] = 'sending'): Pending => ({
    clientId,
    text: `pending ${clientId}`,
    at,
    state,
  });

  it('shows a pending message after the stored ones, as mine', () => {
    const rows = chatRows([msg('a', 10)], [pending('c1', 5)], me);
    expect(rows.map((r) => r.key)).toEqual(['i:a', 'c:c1']);
    expect(rows[1]).toMatchObject({ id: null, userId: 'u1', state: 'sending', message: 'pending c1' });
  });

  it('hides a pending message once the server has it, keeping its key', () => {
    const before = chatRows([], [pending('c1', 5)], me);
    const after = chatRows([msg('a', 10, { clientId: 'c1' })], [pending('c1', 5)], me);
    expect(after).toHaveLength(1);
    expect(after[0]?.key).toBe(before[0]?.key);
    expect(after[0]).toMatchObject({ id: 'a', state: 'sent' });
  });
});

describe('newClientId', () => {
  it('is a UUID the server accepts (1-64 of [A-Za-z0-9_-])', () => {
    const ids = new Set(Array.from({ length: 100 }, () => newClientId()));
    expect(ids.size).toBe(100);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it('still makes one without crypto.randomUUID (plain http)', () => {
    const original = globalThis.crypto.randomUUID;
    Object.defineProperty(globalThis.crypto, 'randomUUID', { value: undefined, configurable: true });
    try {
      expect(newClientId()).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    } finally {
      Object.defineProperty(globalThis.crypto, 'randomUUID', { value: original, configurable: true });
    }
  });
});
