// @vitest-environment jsdom
// The agent store against a fake API and socket: history and live lines meet without a gap or a
// duplicate, a gap is filled from history before later lines show, a resync catches up, and the
// since-map says what is held.
import { signal } from '@preact/signals';
import { beforeEach, describe, expect, it, vi } from 'vitest';

const fake = vi.hoisted(() => {
  const handlers = new Map<string, (data: unknown) => void>();
  const state = {
    handlers,
    since: null as null | (() => Record<string, number>),
    joined: [] as Array<() => void>,
    /** The agent's stored history (what REST can give). */
    durable: 0,
    requests: [] as number[],
  };
  return state;
});

const line = (seq: number) => ({
  seq,
  stream: 'stdout' as const,
  data: `{"n":${seq}}`,
  event: { kind: 'assistant', blocks: [{ type: 'text', text: `line ${seq}` }] },
});

vi.mock('../src/api/client', () => ({
  errorMessage: (e: unknown) => String(e),
  api: {
    GET: vi.fn(async (path: string, opts: { params: { path: { id: string }; query?: { fromSeq: number; limit: number } } }) => {
      if (path === '/api/agent/{id}/output') {
        const { fromSeq, limit } = opts.params.query!;
        fake.requests.push(fromSeq);
        const chunks = [];
        for (let s = fromSeq; s < Math.min(fake.durable, fromSeq + limit); s++) chunks.push(line(s));
        return { data: { agentId: opts.params.path.id, chunks, nextSeq: fromSeq + chunks.length }, response: { status: 200 } };
      }
      if (path === '/api/agent/list') return { data: { agents: [] }, response: { status: 200 } };
      if (path === '/api/team') return { data: { members: [] }, response: { status: 200 } };
      return { data: undefined, error: { error: { message: 'not here' } }, response: { status: 404 } };
    }),
  },
}));
vi.mock('../src/api/session', () => ({
  session: signal({ team: { id: 'team' }, user: { id: 'me' } }),
}));
vi.mock('../src/realtime/socket', () => ({
  realtime: {
    connection: signal('online'),
    on: (event: string, handler: (data: unknown) => void) => {
      fake.handlers.set(event, handler);
      return () => fake.handlers.delete(event);
    },
    emit: vi.fn(async () => ({ ok: true })),
    registerSince: (provider: () => Record<string, number>) => {
      fake.since = provider;
      return () => {};
    },
    onJoined: (handler: () => void) => {
      fake.joined.push(handler);
      return () => {};
    },
  },
}));

const { holdOutput } = await import('../src/agents/store');

const live = (agentId: string, seq: number) =>
  fake.handlers.get('agent_output')!({ agentId, owner: 'me', canControl: true, ...line(seq) });
const settle = () => new Promise((r) => setTimeout(r, 50));
/** Waits (polling, no deadline asserted on) until the agent holds exactly these seqs. */
const holds = (id: string, seqs: number[]) =>
  vi.waitFor(() => expect(seqsOf(id)).toEqual(seqs), { timeout: 10_000, interval: 20 });
const seqsOf = (id: string) => holdOutput(id).lines.map((l) => l.seq);

beforeEach(() => {
  fake.requests.length = 0;
});

describe('agent output store', () => {
  it('a view opened mid-stream shows history, then live lines, each once and in order', async () => {
    fake.durable = 12;
    const out = holdOutput('a1');
    // Live lines that arrive before history has come: held back, not shown past the gap.
    live('a1', 12);
    live('a1', 13);
    expect(out.lines).toEqual([]);
    await settle();
    fake.durable = 14;
    live('a1', 13); // a duplicate
    live('a1', 14);
    await holds('a1', [...Array(15).keys()]);
    expect(fake.since!()).toMatchObject({ a1: 14 });
  });

  it('a gap in live lines is filled from history before later lines show', async () => {
    fake.durable = 3;
    holdOutput('a2');
    await holds('a2', [0, 1, 2]);
    // 3 and 4 never came live (lost on the way); 5 does.
    fake.durable = 6;
    live('a2', 5);
    expect(seqsOf('a2')).toEqual([0, 1, 2]);
    await holds('a2', [0, 1, 2, 3, 4, 5]);
    expect(fake.requests).toContain(3);
  });

  it('waits for lines published but not stored yet, rather than showing a gap', async () => {
    fake.durable = 2;
    holdOutput('a3');
    await holds('a3', [0, 1]);
    live('a3', 4); // 2 and 3 are not durable yet
    await settle();
    expect(seqsOf('a3')).toEqual([0, 1]);
    fake.durable = 5;
    await holds('a3', [0, 1, 2, 3, 4]);
  });

  it('a resync catches the held agents up from history', async () => {
    fake.durable = 4;
    holdOutput('a4');
    await holds('a4', [0, 1, 2, 3]);
    fake.durable = 7; // missed while out of the live stream
    fake.handlers.get('resync')!({ reason: 'slow_consumer' });
    await holds('a4', [0, 1, 2, 3, 4, 5, 6]);
    // After a rejoin the replay from since overlaps what we fetched: nothing twice.
    for (let s = 5; s <= 7; s++) live('a4', s);
    expect(seqsOf('a4')).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('history that is gone is said, and holding resumes where it starts', async () => {
    fake.durable = 3;
    const out = holdOutput('a5');
    await holds('a5', [0, 1, 2]);
    fake.durable = 30;
    fake.handlers.get('resync')!({ agentId: 'a5', reason: 'history_lost', availableFrom: 20 });
    await holds('a5', [0, 1, 2, ...Array.from({ length: 10 }, (_, i) => 20 + i)]);
    expect(out.notice.value).toMatch(/no longer available/);
  });

  it('exposes the seqs the view holds for tests and diagnosis', () => {
    const w = window as unknown as { covibe: { agentSeqs: (id: string) => number[] } };
    // a2 was caught up by the resync too: all it holds, contiguous.
    expect(w.covibe.agentSeqs('a2')).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(w.covibe.agentSeqs('nobody')).toEqual([]);
  });
});
