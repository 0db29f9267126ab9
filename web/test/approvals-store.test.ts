// The store of waiting tool requests against a fake API and socket: events in (one card per
// request however often it is sent), resolved ones out with their outcome a moment, the list
// read after every join (what was decided while away goes, what is listed shows), and the
// owner's answer: sent once, a late one told "already answered", a refusal leaving it waiting.
import { signal } from '@preact/signals';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

const fake = vi.hoisted(() => ({
  handlers: new Map<string, (data: unknown) => void>(),
  joined: [] as Array<() => void>,
  /** What `GET /api/agent/permissions` answers. */
  listed: [] as unknown[],
  /** Holds the list's answer until released (a list read while events arrive). */
  gate: null as null | Promise<void>,
  emitted: [] as Array<[string, unknown]>,
  ack: null as null | ((event: string, data: unknown) => unknown),
  posted: [] as unknown[],
}));

vi.mock('../src/api/client', () => ({
  errorMessage: (e: unknown) => (e instanceof Error ? e.message : ((e as { error?: { message?: string } })?.error?.message ?? String(e))),
  api: {
    GET: vi.fn(async (path: string) => {
      if (path === '/api/agent/permissions') {
        if (fake.gate) await fake.gate;
        return { data: { requests: fake.listed }, response: { status: 200 } };
      }
      return { data: undefined, error: { error: { message: 'not here' } }, response: { status: 404 } };
    }),
    POST: vi.fn(async (path: string, opts: { params: { path: { id: string; requestId: string } }; body: { decision: string } }) => {
      fake.posted.push({ path, ...opts.params.path, ...opts.body });
      return {
        data: { request: { ...request('r-rest', 'a-1', 'me'), state: 'allowed', decidedBy: 'me' } },
        response: { status: 200 },
      };
    }),
  },
}));
vi.mock('../src/api/session', () => ({
  session: signal({ team: { id: 'team' }, user: { id: 'me', displayName: 'Sarah' } }),
}));
vi.mock('../src/realtime/socket', () => {
  class Refused extends Error {
    code: string;
    constructor(message: string, code: string) {
      super(message);
      this.code = code;
    }
  }
  return {
    Refused,
    realtime: {
      connection: signal('online'),
      on: (event: string, handler: (data: unknown) => void) => {
        fake.handlers.set(event, handler);
        return () => fake.handlers.delete(event);
      },
      emit: vi.fn(async (event: string, data: unknown) => {
        fake.emitted.push([event, data]);
        return fake.ack ? fake.ack(event, data) : { ok: true };
      }),
      registerSince: () => () => {},
      onJoined: (handler: () => void) => {
        fake.joined.push(handler);
        return () => {};
      },
    },
  };
});

const { realtime, Refused } = await import('../src/realtime/socket');
const approvals = await import('../src/approvals/store');
const { members } = await import('../src/agents/store');
const { waiting, decided, mine, waitingOn, answer, keyOf, OUTCOME_MS, startApprovals } = approvals;
startApprovals();

function request(requestId: string, agentId: string, owner: string, tool = 'Bash') {
  return {
    agentId,
    requestId,
    owner,
    tool,
    input: { command: `echo ${requestId}` },
    summary: `echo ${requestId}`,
    state: 'pending' as const,
    createdAt: Number(requestId.replace(/\D/g, '') || 0),
    expiresAt: Date.now() + 300_000,
  };
}
const send = (event: string, data: unknown) => fake.handlers.get(event)!(data);
const asked = (requestId: string, agentId: string, owner: string, canAnswer: boolean) =>
  send('agent_permission', { ...request(requestId, agentId, owner), canAnswer });
const resolved = (requestId: string, agentId: string, decision: string, decidedBy: string) =>
  send('agent_permission_resolved', { agentId, requestId, owner: 'me', decision, decidedBy, at: Date.now() });
const flush = () => new Promise((r) => setTimeout(r, 0));
const keys = () => [...waiting.value.keys()].sort();

beforeEach(() => {
  waiting.value = new Map();
  decided.value = new Map();
  fake.listed = [];
  fake.gate = null;
  fake.emitted.length = 0;
  fake.posted.length = 0;
  fake.ack = null;
  realtime.connection.value = 'online';
  members.value = new Map([['miguel', 'Miguel']]);
});
afterEach(() => vi.useRealTimers());

describe('waiting requests from events', () => {
  it('holds one card per request, says who may answer, and lists the ones waiting on me', () => {
    asked('r1', 'a-1', 'me', true);
    asked('r2', 'a-2', 'miguel', false);
    // The replay after a join sends it again: still one.
    asked('r1', 'a-1', 'me', true);
    expect(keys()).toEqual(['a-1/r1', 'a-2/r2']);
    expect(waiting.value.get('a-1/r1')).toMatchObject({ tool: 'Bash', summary: 'echo r1', canAnswer: true });
    expect(waiting.value.get('a-2/r2')?.canAnswer).toBe(false);
    expect(mine.value.map((r) => r.requestId)).toEqual(['r1']);
    expect(waitingOn('a-2').map((r) => r.requestId)).toEqual(['r2']);
    // Malformed or already decided: ignored.
    send('agent_permission', { tool: 'Bash' });
    send('agent_permission', { ...request('r3', 'a-1', 'me'), state: 'allowed', canAnswer: true });
    expect(keys()).toEqual(['a-1/r1', 'a-2/r2']);
  });

  it('takes a resolved request out and shows what became of it for a moment', () => {
    vi.useFakeTimers();
    asked('r1', 'a-1', 'miguel', false);
    resolved('r1', 'a-1', 'denied', 'miguel');
    expect(keys()).toEqual([]);
    expect(decided.value.get('a-1/r1')).toMatchObject({ text: 'Denied by Miguel', tone: 'bad' });
    // A late copy of the request (a replay sent before the answer) does not bring it back.
    asked('r1', 'a-1', 'miguel', false);
    expect(keys()).toEqual([]);
    vi.advanceTimersByTime(OUTCOME_MS + 10);
    expect(decided.value.size).toBe(0);
    // Timed out.
    asked('r2', 'a-1', 'me', true);
    resolved('r2', 'a-1', 'timed_out', 'timeout');
    expect(decided.value.get('a-1/r2')?.text).toBe('Not answered in time: denied');
  });
});

describe('the list after a (re)join', () => {
  it('drops what was decided while away, adds what is listed, keeps what events sent meanwhile', async () => {
    asked('r10', 'a-1', 'me', true); // decided while this device was away
    asked('r11', 'a-1', 'me', true); // still waiting
    fake.listed = [request('r11', 'a-1', 'me'), request('r12', 'a-3', 'miguel'), request('r13', 'a-3', 'me')];
    let release = () => {};
    fake.gate = new Promise<void>((r) => (release = r));
    fake.joined.forEach((h) => h());
    // While the list is read: the replay of one more, asked after the list was made.
    asked('r14', 'a-1', 'me', true);
    release();
    fake.gate = null;
    await flush();
    expect(keys()).toEqual(['a-1/r11', 'a-1/r14', 'a-3/r12', 'a-3/r13']);
    // Listed requests carry no canAnswer: the owner's own are theirs to answer.
    expect(waiting.value.get('a-3/r12')?.canAnswer).toBe(false);
    expect(waiting.value.get('a-3/r13')?.canAnswer).toBe(true);
    expect(decided.value.has('a-1/r10')).toBe(false);
  });

  it('does not bring back a request resolved while the list was read', async () => {
    fake.listed = [request('r20', 'a-1', 'me')];
    asked('r20', 'a-1', 'me', true);
    let release = () => {};
    fake.gate = new Promise<void>((r) => (release = r));
    fake.joined.forEach((h) => h());
    resolved('r20', 'a-1', 'allowed', 'me');
    release();
    fake.gate = null;
    await flush();
    expect(keys()).toEqual([]);
    expect(decided.value.get('a-1/r20')?.text).toBe('Allowed by you');
  });
});

describe("the owner's answer", () => {
  it('sends agent_permission_answer once and shows the outcome, Always included', async () => {
    asked('r30', 'a-1', 'me', true);
    fake.ack = (_e, data) => ({
      ok: true,
      request: { ...request('r30', 'a-1', 'me'), state: 'allowed', decidedBy: 'me', ...(data as object) },
    });
    const said = await answer(waiting.value.get('a-1/r30')!, 'allow_always_for_agent');
    expect(fake.emitted).toEqual([['agent_permission_answer', { agentId: 'a-1', requestId: 'r30', decision: 'allow_always_for_agent' }]]);
    expect(said.text).toBe('Allowed by you, and always for this agent from now on');
    expect(keys()).toEqual([]);
    expect(decided.value.get(keyOf('a-1', 'r30'))?.text).toBe(said.text);
    // The resolved event that follows changes nothing.
    resolved('r30', 'a-1', 'allowed', 'me');
    expect(keys()).toEqual([]);
  });

  it('says "already answered" on a conflict and takes the card away', async () => {
    asked('r31', 'a-1', 'me', true);
    fake.ack = () => {
      throw new Refused('this request was already answered: denied by the timeout', 'conflict');
    };
    const said = await answer(waiting.value.get('a-1/r31')!, 'allow');
    expect(said).toEqual({ text: 'Already answered: denied by the timeout', tone: 'warn' });
    expect(keys()).toEqual([]);
    expect(decided.value.get('a-1/r31')?.text).toBe('Already answered: denied by the timeout');
  });

  it('leaves the request waiting when the answer is refused otherwise', async () => {
    asked('r32', 'a-1', 'me', true);
    fake.ack = () => {
      throw new Error('No answer from the server: try again.');
    };
    await expect(answer(waiting.value.get('a-1/r32')!, 'deny')).rejects.toThrow('No answer from the server');
    expect(keys()).toEqual(['a-1/r32']);
    expect(approvals.answering.value.size).toBe(0);
  });

  it('answers over REST while the socket is offline', async () => {
    asked('r-rest', 'a-1', 'me', true);
    realtime.connection.value = 'reconnecting';
    const said = await answer(waiting.value.get('a-1/r-rest')!, 'allow');
    expect(fake.emitted).toEqual([]);
    expect(fake.posted).toEqual([{ path: '/api/agent/{id}/permissions/{requestId}', id: 'a-1', requestId: 'r-rest', decision: 'allow' }]);
    expect(said.text).toBe('Allowed by you');
    expect(keys()).toEqual([]);
  });
});
