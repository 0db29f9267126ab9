import createClient from 'openapi-fetch';
import { describe, expect, it, vi } from 'vitest';
import type { paths } from '../src/api/schema.gen';
import { authMiddleware, errorMessage } from '../src/api/client';
import { singleFlight } from '../src/api/singleflight';

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });

/** A server whose valid token is `valid`; it records what it was sent. */
function server(valid: { token: string }) {
  const seen: Array<{ path: string; auth: string | null; body: string }> = [];
  const fetch = vi.fn(async (input: Request) => {
    const body = input.method === 'GET' ? '' : await input.text();
    const auth = input.headers.get('Authorization');
    seen.push({ path: new URL(input.url).pathname, auth, body });
    if (auth !== `Bearer ${valid.token}`) return json(401, { error: { code: 'unauthenticated', message: 'expired' } });
    return json(200, { ok: true, echo: body });
  });
  return { fetch, seen };
}

function client(fetch: (r: Request) => Promise<Response>, deps: Parameters<typeof authMiddleware>[0]) {
  const c = createClient<paths>({ baseUrl: 'http://test.local', fetch });
  c.use(authMiddleware(deps));
  return c;
}

describe('authMiddleware', () => {
  it('sends the access token as a bearer header', async () => {
    const s = server({ token: 't1' });
    const c = client(s.fetch, { token: async () => 't1', refresh: async () => 't2' });
    const { data } = await c.GET('/api/agent/list');
    expect(data).toBeTruthy();
    expect(s.seen[0]?.auth).toBe('Bearer t1');
  });

  it('refreshes once for a burst of 401s and retries each request, body and all', async () => {
    const valid = { token: 'new' };
    const s = server(valid);
    let refreshes = 0;
    const refresh = singleFlight(async () => {
      refreshes++;
      await new Promise((r) => setTimeout(r, 10));
      return 'new';
    });
    const c = client(s.fetch, { token: async () => 'old', refresh });
    const [a, b, m] = await Promise.all([
      c.GET('/api/agent/list'),
      c.GET('/api/team'),
      c.POST('/api/chat/message', { body: { message: 'hello' } }),
    ]);
    expect(refreshes).toBe(1);
    expect(a.response.status).toBe(200);
    expect(b.response.status).toBe(200);
    expect(m.response.status).toBe(200);
    const retried = s.seen.filter((r) => r.auth === 'Bearer new');
    expect(retried).toHaveLength(3);
    expect(retried.find((r) => r.path === '/api/chat/message')?.body).toBe(JSON.stringify({ message: 'hello' }));
  });

  it('answers the 401 when the session ended (refresh gives nothing)', async () => {
    const s = server({ token: 'never' });
    const c = client(s.fetch, { token: async () => 'old', refresh: async () => null });
    const { error, response } = await c.GET('/api/team');
    expect(response.status).toBe(401);
    expect(errorMessage(error)).toBe('expired');
    expect(s.seen).toHaveLength(1);
  });

  it('retries once only: a second 401 is the answer', async () => {
    const s = server({ token: 'never' });
    const refresh = vi.fn(async () => 'still-wrong');
    const c = client(s.fetch, { token: async () => 'old', refresh });
    const { response } = await c.GET('/api/team');
    expect(response.status).toBe(401);
    expect(refresh).toHaveBeenCalledTimes(1);
    expect(s.seen).toHaveLength(2);
  });

  it('sends no token with sign-in requests and never retries them', async () => {
    const s = server({ token: 'x' });
    const refresh = vi.fn(async () => 'x');
    const c = client(s.fetch, { token: async () => 'x', refresh });
    await c.POST('/api/auth/login', { body: { inviteCode: 'bad', email: 'a@b.c', displayName: 'A' } });
    expect(s.seen[0]?.auth).toBeNull();
    expect(refresh).not.toHaveBeenCalled();
  });
});

describe('errorMessage', () => {
  it('reads the API error shape', () => {
    expect(errorMessage({ error: { code: 'invalid_argument', message: 'team name is empty' } })).toBe('team name is empty');
  });
  it('reads thrown errors and strings', () => {
    expect(errorMessage(new Error('boom'))).toBe('boom');
    expect(errorMessage('plain')).toBe('plain');
    expect(errorMessage(new TypeError('Failed to fetch'))).toMatch(/cannot be reached/);
    expect(errorMessage(undefined)).toBe('Something went wrong.');
  });
});

describe('singleFlight', () => {
  it('shares one run among concurrent callers, then runs afresh', async () => {
    let runs = 0;
    const once = singleFlight(async () => ++runs);
    expect(await Promise.all([once(), once(), once()])).toEqual([1, 1, 1]);
    expect(await once()).toBe(2);
  });
  it('lets the next call run again after a failure', async () => {
    let runs = 0;
    const once = singleFlight(async () => {
      runs++;
      if (runs === 1) throw new Error('first fails');
      return runs;
    });
    await expect(once()).rejects.toThrow('first fails');
    expect(await once()).toBe(2);
  });
});
