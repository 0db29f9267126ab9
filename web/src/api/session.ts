// Who is signed in. The access token lives in memory only; the refresh token (with the team and
// user, so a reload shows the app at once) in localStorage. The access token is refreshed
// silently before it expires, once at a time across tabs (a refresh token replayed by a second tab
// would end the session), and a failed refresh that the server refuses signs out.

import { signal } from '@preact/signals';
import { singleFlight } from './singleflight';
import type { ApiSession, Team, TokenPair, User } from './types';

export interface Session {
  team: Team;
  user: User;
  /** Empty until the first refresh after a reload. */
  accessToken: string;
  /** When the access token expires, ms since the epoch, server clock (as the API says it). */
  accessExpiresAt: number;
}

export const session = signal<Session | null>(null);
/** Why the member was signed out without asking (shown on the sign-in screen). */
export const signedOutNotice = signal<string | null>(null);

const KEY = 'covibe.session';
/** Refresh this long before expiry (or a fifth of the lifetime when that is shorter). */
const MARGIN_MS = 60_000;

interface Stored {
  refreshToken: string;
  team: Team;
  user: User;
}

function readStored(): Stored | null {
  try {
    const raw = localStorage.getItem(KEY);
    if (!raw) return null;
    const value = JSON.parse(raw) as Partial<Stored> | null;
    if (value && typeof value.refreshToken === 'string' && value.team && value.user) {
      return value as Stored;
    }
  } catch {
    // Storage blocked or garbled: as if signed out.
  }
  return null;
}

function writeStored(stored: Stored | null) {
  try {
    if (stored) localStorage.setItem(KEY, JSON.stringify(stored));
    else localStorage.removeItem(KEY);
  } catch {
    // Private mode without storage: the session lasts as long as the page.
  }
}

/**
 * The expiry on this device's clock: the server's expiry less the offset between the clocks
 * (from the answer's Date header), so a phone whose clock is off neither refreshes in a loop nor
 * lets its token lapse.
 */
let localExpiry = 0;
/** How long the current token lived when it arrived: margins scale down for short-lived ones. */
let lifetime = 0;
function setExpiry(serverExpiry: number, answer?: Response) {
  const serverNow = Date.parse(answer?.headers.get('date') ?? '');
  const skew = Number.isFinite(serverNow) ? serverNow - Date.now() : 0;
  // The Date header has one-second precision: small offsets are noise.
  localExpiry = serverExpiry - (Math.abs(skew) > 2000 ? skew : 0);
  lifetime = Math.max(0, localExpiry - Date.now());
}

let timer: ReturnType<typeof setTimeout> | undefined;
function schedule() {
  clearTimeout(timer);
  if (!session.value || !session.value.accessToken) return;
  const left = localExpiry - Date.now();
  const delay = Math.max(5_000, left - Math.min(MARGIN_MS, left / 5));
  timer = setTimeout(() => void refreshAccess().catch(() => retryLater()), delay);
}
function retryLater() {
  clearTimeout(timer);
  timer = setTimeout(() => void refreshAccess().catch(() => retryLater()), 15_000);
}

/** Starts a session from a sign-in answer (create team, join, device code). */
export function startSession(answer: ApiSession, response?: Response): void {
  if (!answer.team || !answer.user) throw new Error('the server answered without a team or user');
  writeStored({ refreshToken: answer.refreshToken, team: answer.team, user: answer.user });
  setExpiry(answer.accessExpiresAt, response);
  signedOutNotice.value = null;
  session.value = {
    team: answer.team,
    user: answer.user,
    accessToken: answer.accessToken,
    accessExpiresAt: answer.accessExpiresAt,
  };
  schedule();
}

/** Takes a newer view of the member and team (a role change, a renamed team). */
export function updateIdentity(team: Team | null | undefined, user: User | null | undefined) {
  const current = session.value;
  const stored = readStored();
  if (!current || !team || !user || user.id !== current.user.id) return;
  session.value = { ...current, team, user };
  if (stored) writeStored({ ...stored, team, user });
}

/** The refresh could not be made or answered (network, server trouble): the session stays. */
export class RefreshUnavailable extends Error {}

async function refreshOnce(): Promise<string | null> {
  const run = async (): Promise<string | null> => {
    // Read under the lock: another tab may have rotated the refresh token a moment ago.
    const stored = readStored();
    if (!stored) {
      if (session.value) endLocally('You signed out on this device.');
      return null;
    }
    let answer: Response;
    try {
      answer = await fetch('/api/auth/refresh', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ refreshToken: stored.refreshToken }),
      });
    } catch {
      throw new RefreshUnavailable('the server cannot be reached');
    }
    if (answer.status === 400 || answer.status === 401 || answer.status === 403) {
      endLocally('Your session has ended: sign in again.');
      return null;
    }
    if (!answer.ok) throw new RefreshUnavailable(`refresh answered ${answer.status}`);
    const pair = (await answer.json()) as TokenPair;
    // Signed out while the answer was on its way: it is not taken.
    if (readStored()?.refreshToken !== stored.refreshToken) return null;
    writeStored({ ...stored, refreshToken: pair.refreshToken });
    setExpiry(pair.accessExpiresAt, answer);
    const current = session.value;
    session.value = {
      team: current?.team ?? stored.team,
      user: current?.user ?? stored.user,
      accessToken: pair.accessToken,
      accessExpiresAt: pair.accessExpiresAt,
    };
    schedule();
    return pair.accessToken;
  };
  const locks = typeof navigator !== 'undefined' ? navigator.locks : undefined;
  return locks ? locks.request('covibe-refresh', run) : run();
}

/**
 * A fresh access token: one refresh however many callers ask at once. `null` when the session
 * ended (the member is signed out); throws {@link RefreshUnavailable} when the server cannot say.
 */
export const refreshAccess: () => Promise<string | null> = singleFlight(refreshOnce);

/** The access token, refreshed first when it expires within `marginMs`. */
export async function freshAccessToken(marginMs = 10_000): Promise<string | null> {
  const current = session.value;
  if (!current) return null;
  const margin = Math.min(marginMs, lifetime / 4);
  if (current.accessToken && localExpiry - Date.now() > margin) return current.accessToken;
  return refreshAccess();
}

function endLocally(notice: string | null) {
  clearTimeout(timer);
  writeStored(null);
  localExpiry = 0;
  lifetime = 0;
  signedOutNotice.value = notice;
  session.value = null;
}

/** Signs out: ends the session at the server (best effort) and forgets every token here. */
export async function signOut(notice: string | null = null): Promise<void> {
  const token = await freshAccessToken().catch(() => session.value?.accessToken ?? null);
  endLocally(notice);
  if (!token) return;
  try {
    await fetch('/api/auth/logout', {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}` },
      keepalive: true,
    });
  } catch {
    // Offline: the refresh token is gone from this device all the same.
  }
}

/** Ends the session here only, saying why (the server ended it: revoked, removed). */
export function sessionEnded(notice: string): void {
  endLocally(notice);
}

/**
 * Picks up a stored session at start-up: the app shows at once with the stored team and user,
 * and the first request or socket join refreshes the access token.
 */
export function restoreSession(): void {
  const stored = readStored();
  if (stored) session.value = { team: stored.team, user: stored.user, accessToken: '', accessExpiresAt: 0 };
  if (typeof window === 'undefined') return;
  // Timers are late after a phone sleeps: check on waking.
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState !== 'visible' || !session.value?.accessToken) return;
    if (localExpiry - Date.now() < MARGIN_MS) void refreshAccess().catch(() => retryLater());
  });
  // Another tab signed out, or in as someone else.
  window.addEventListener('storage', (event) => {
    if (event.key !== KEY && event.key !== null) return;
    const next = readStored();
    const current = session.value;
    if (!next && current) endLocally('You signed out in another tab.');
    else if (next && (!current || next.user.id !== current.user.id)) location.reload();
  });
}
