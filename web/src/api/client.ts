// The REST client, typed from the gateway's OpenAPI document. Every request carries the access
// token (refreshed first when about to expire); a 401 refreshes once for all requests that got
// one, and each is retried with the new token.

import createClient, { type Middleware } from 'openapi-fetch';
import type { paths } from './schema.gen';
import { freshAccessToken, refreshAccess, updateIdentity } from './session';

/** Requests that never carry a token or are never retried after a refresh. */
const UNAUTHENTICATED = new Set([
  '/api/auth/refresh',
  '/api/auth/login',
  '/api/auth/device/redeem',
  '/api/team/create',
]);

export interface AuthDeps {
  /** The token to send, `null` when signed out. */
  token: () => Promise<string | null>;
  /** A new token after a 401, `null` when the session ended. */
  refresh: () => Promise<string | null>;
}

/** The middleware: `Authorization: Bearer`, and one refresh-and-retry on a 401. */
export function authMiddleware(deps: AuthDeps): Middleware {
  // Each request's copy, kept until its answer: a body can be read only once.
  const copies = new Map<string, Request>();
  return {
    async onRequest({ request, schemaPath, id }) {
      if (UNAUTHENTICATED.has(schemaPath)) return undefined;
      const token = await deps.token().catch(() => null);
      if (!token) return undefined;
      request.headers.set('Authorization', `Bearer ${token}`);
      if (schemaPath !== '/api/auth/logout') copies.set(id, request.clone());
      return request;
    },
    async onResponse({ response, id, options }) {
      const copy = copies.get(id);
      copies.delete(id);
      if (response.status !== 401 || !copy) return undefined;
      const token = await deps.refresh().catch(() => null);
      if (!token) return undefined;
      copy.headers.set('Authorization', `Bearer ${token}`);
      return options.fetch(copy);
    },
    onError({ id }) {
      copies.delete(id);
    },
  };
}

export const api = createClient<paths>({ baseUrl: '' });
api.use(authMiddleware({ token: () => freshAccessToken(), refresh: () => refreshAccess() }));

/** The text of an API error (`{error: {message}}`), a refusal, or anything thrown. */
export function errorMessage(error: unknown): string {
  if (typeof error === 'string' && error) return error;
  if (error && typeof error === 'object') {
    const nested = (error as { error?: { message?: unknown } }).error;
    if (nested && typeof nested.message === 'string' && nested.message) return nested.message;
    const message = (error as { message?: unknown }).message;
    if (typeof message === 'string' && message) {
      // fetch's own words for "no network".
      if (error instanceof TypeError && /fetch|network|load failed/i.test(message)) {
        return 'The server cannot be reached: check your connection.';
      }
      return message;
    }
  }
  return 'Something went wrong.';
}

/** Re-reads the member and team (role changes while away). */
export async function loadMe(): Promise<void> {
  const { data } = await api.GET('/api/auth/me');
  if (data) updateIdentity(data.team, data.user);
}
