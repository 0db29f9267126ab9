// @vitest-environment jsdom
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  freshAccessToken,
  refreshAccess,
  restoreSession,
  session,
  signedOutNotice,
  signOut,
  startSession,
} from '../src/api/session';
import type { ApiSession } from '../src/api/types';

const team = { id: 't1', name: 'Acme', createdAt: 1 };
const user = { id: 'u1', teamId: 't1', email: 'a@x.io', displayName: 'Ann', createdAt: 1, role: 'owner' as const };
const signIn = (over: Partial<ApiSession> = {}): ApiSession => ({
  team,
  user,
  accessToken: 'access-1',
  refreshToken: 'refresh-1',
  accessExpiresAt: Date.now() + 900_000,
  ...over,
});
const stored = () => JSON.parse(localStorage.getItem('covibe.session') ?? 'null');

let fetchMock: ReturnType<typeof vi.fn>;
beforeEach(() => {
  localStorage.clear();
  session.value = null;
  signedOutNotice.value = null;
  fetchMock = vi.fn();
  vi.stubGlobal('fetch', fetchMock);
});
afterEach(() => {
  vi.unstubAllGlobals();
});

describe('session', () => {
  it('keeps the access token in memory and only the refresh token (with who) in storage', () => {
    startSession(signIn());
    expect(session.value?.accessToken).toBe('access-1');
    expect(stored()).toEqual({ refreshToken: 'refresh-1', team, user });
    expect(JSON.stringify(stored())).not.toContain('access-1');
  });

  it('refreshes once for many callers and rotates the stored refresh token', async () => {
    startSession(signIn());
    fetchMock.mockImplementation(async (_url: string, init: RequestInit) => {
      expect(JSON.parse(String(init.body))).toEqual({ refreshToken: 'refresh-1' });
      await new Promise((r) => setTimeout(r, 5));
      return new Response(
        JSON.stringify({ accessToken: 'access-2', refreshToken: 'refresh-2', accessExpiresAt: Date.now() + 900_000 }),
        { status: 200 },
      );
    });
    const tokens = await Promise.all([refreshAccess(), refreshAccess(), refreshAccess()]);
    expect(tokens).toEqual(['access-2', 'access-2', 'access-2']);
    expect(fetchMock).toHaveBeenCalledTimes(1);
    expect(stored().refreshToken).toBe('refresh-2');
    expect(session.value?.accessToken).toBe('access-2');
  });

  it('after a reload, shows the stored member at once and gets a token on first use', async () => {
    localStorage.setItem('covibe.session', JSON.stringify({ refreshToken: 'refresh-9', team, user }));
    restoreSession();
    expect(session.value).toMatchObject({ team, user, accessToken: '' });
    fetchMock.mockResolvedValue(
      new Response(JSON.stringify({ accessToken: 'access-9', refreshToken: 'refresh-10', accessExpiresAt: Date.now() + 900_000 })),
    );
    expect(await freshAccessToken()).toBe('access-9');
    expect(stored().refreshToken).toBe('refresh-10');
  });

  it('signs out with a notice when the server refuses the refresh token', async () => {
    startSession(signIn());
    fetchMock.mockResolvedValue(new Response(JSON.stringify({ error: { code: 'unauthenticated', message: 'revoked' } }), { status: 401 }));
    expect(await refreshAccess()).toBeNull();
    expect(session.value).toBeNull();
    expect(stored()).toBeNull();
    expect(signedOutNotice.value).toMatch(/sign in again/);
  });

  it('keeps the session when the server cannot be reached', async () => {
    startSession(signIn());
    fetchMock.mockRejectedValue(new TypeError('Failed to fetch'));
    await expect(refreshAccess()).rejects.toThrow();
    expect(session.value?.accessToken).toBe('access-1');
    expect(stored().refreshToken).toBe('refresh-1');
  });

  it('sign-out ends the session at the server and forgets every token', async () => {
    startSession(signIn());
    fetchMock.mockResolvedValue(new Response(JSON.stringify({ ended: 1 })));
    await signOut();
    expect(session.value).toBeNull();
    expect(stored()).toBeNull();
    const [url, init] = fetchMock.mock.calls[0] as [string, RequestInit];
    expect(url).toBe('/api/auth/logout');
    expect(new Headers(init.headers).get('Authorization')).toBe('Bearer access-1');
    expect(url).not.toContain('access-1');
  });

  it('reads the clock offset from the Date header: a wrong phone clock does not refresh in a loop', async () => {
    // The phone is ten minutes ahead of the server.
    const serverNow = Date.now() - 600_000;
    const answer = new Response('{}', { headers: { Date: new Date(serverNow).toUTCString() } });
    startSession(signIn({ accessExpiresAt: serverNow + 900_000 }), answer);
    expect(await freshAccessToken()).toBe('access-1');
    expect(fetchMock).not.toHaveBeenCalled();
  });
});
