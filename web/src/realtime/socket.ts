// The team's live connection: one Socket.io socket while signed in, joined to the team with a
// fresh access token (again after every reconnect, and whenever the token is refreshed), with
// the since-maps of the features that hold agent output so the gateway replays what was missed.
// Features listen with `on`, act with `emit` (the ack, or the refusal as an error) and refetch
// what they show in `onJoined`.

import { effect, signal, type Signal } from '@preact/signals';
import { io, type Socket } from 'socket.io-client';
import { freshAccessToken, refreshAccess, session, sessionEnded } from '../api/session';
import { mergeSince } from './since';

export type Connection = 'connecting' | 'online' | 'offline' | 'reconnecting';

/** The ack of a successful `join_team`. */
export interface JoinAck {
  ok: true;
  teamId: string;
  userId: string;
  tokenExpiresAt: number;
  resumed?: unknown;
}

/** An event the server refused (`{ok: false, error}`): its message is the server's. */
export class Refused extends Error {
  readonly code: string;
  readonly retryAfter: number | undefined;
  constructor(message: string, code: string, retryAfter?: number) {
    super(message);
    this.name = 'Refused';
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

interface Refusal {
  ok: false;
  error?: { code?: string; message?: string; retryAfter?: number };
}

const ACK_TIMEOUT_MS = 15_000;

const connection: Signal<Connection> = signal('connecting');
/** The first connection is taking a while (the banner says so only then). */
const slowStart = signal(false);
const handlers = new Map<string, Set<(data: unknown) => void>>();
const sinceProviders = new Set<() => Record<string, number>>();
const joinedHandlers = new Set<(ack: JoinAck) => void>();
let waiters: Array<() => void> = [];

let socket: Socket | null = null;
/** The token the socket last joined with. */
let joinedToken: string | null = null;
let joinRetry: ReturnType<typeof setTimeout> | undefined;
let manualRetry: ReturnType<typeof setTimeout> | undefined;
let manualAttempts = 0;

function dispatch(event: string, data: unknown) {
  const set = handlers.get(event);
  if (!set) return;
  for (const handler of [...set]) {
    try {
      handler(data);
    } catch (err) {
      console.error(`handler of ${event} failed`, err);
    }
  }
}

function since(): Record<string, number> {
  const maps: Array<Record<string, number>> = [];
  for (const provider of sinceProviders) {
    try {
      maps.push(provider());
    } catch (err) {
      console.error('a since provider failed', err);
    }
  }
  return mergeSince(maps);
}

function setOnline() {
  connection.value = 'online';
  slowStart.value = false;
  const ready = waiters;
  waiters = [];
  ready.forEach((wake) => wake());
}

function notConnected() {
  joinedToken = null;
  if (typeof navigator !== 'undefined' && navigator.onLine === false) connection.value = 'offline';
  else connection.value = socket?.active ? 'reconnecting' : 'offline';
}

/** The socket (re)connected and features have not yet been told: the next join tells them. */
let connectedSinceJoin = false;

function retryJoin(delayMs = 3_000) {
  clearTimeout(joinRetry);
  joinRetry = setTimeout(() => void join(), delayMs);
}

/**
 * `join_team` on the current socket: after every (re)connect (features then refetch), and on
 * the same connection whenever the token is refreshed.
 */
async function join(authRetried = false): Promise<void> {
  clearTimeout(joinRetry);
  const s = socket;
  const current = session.value;
  if (!s?.connected || !current) return;
  let token: string | null;
  try {
    token = await freshAccessToken(30_000);
  } catch {
    return retryJoin();
  }
  if (!token || s !== socket || !s.connected) return;
  let ack: JoinAck | Refusal;
  try {
    ack = (await s
      .timeout(ACK_TIMEOUT_MS)
      .emitWithAck('join_team', { teamId: current.team.id, token, since: since() })) as JoinAck | Refusal;
  } catch {
    if (s === socket && s.connected) retryJoin();
    return;
  }
  if (s !== socket) return;
  if (!ack.ok) {
    const code = ack.error?.code;
    if (code === 'unauthenticated' && !authRetried) {
      // The token expired on the way, or was revoked: one refresh says which.
      const fresh = await refreshAccess().catch(() => undefined);
      if (fresh === null) return; // signed out
      if (fresh) return join(true);
      return retryJoin();
    }
    if (code === 'permission_denied') {
      sessionEnded(ack.error?.message ? `Signed out: ${ack.error.message}.` : 'You are no longer a member of this team.');
      return;
    }
    console.warn('join_team refused', ack.error);
    return retryJoin(5_000);
  }
  joinedToken = token;
  manualAttempts = 0;
  setOnline();
  if (connectedSinceJoin) {
    connectedSinceJoin = false;
    for (const handler of [...joinedHandlers]) {
      try {
        handler(ack);
      } catch (err) {
        console.error('an onJoined handler failed', err);
      }
    }
  }
}

const ENDED: Record<string, string> = {
  logout: 'This device was signed out.',
  revoked: 'This device was signed out from another device.',
  member_removed: 'You were removed from the team.',
  refresh_reuse: 'This session was ended for safety (its sign-in was used twice): sign in again.',
};

function open() {
  const s = io({
    path: '/socket.io',
    // WebSocket first; long-polling when a proxy will not carry it.
    transports: ['websocket', 'polling'],
    tryAllTransports: true,
    autoConnect: false,
    reconnectionDelay: 500,
    reconnectionDelayMax: 10_000,
    randomizationFactor: 0.5,
    timeout: 10_000,
  });
  socket = s;
  connection.value = 'connecting';
  slowStart.value = false;
  setTimeout(() => {
    if (socket === s && connection.value === 'connecting') slowStart.value = true;
  }, 2_500);
  s.on('connect', () => {
    connectedSinceJoin = true;
    void join();
  });
  s.on('disconnect', (reason) => {
    notConnected();
    // The server closed it (not a session end, which signs out): come back after a pause.
    if (reason === 'io server disconnect' && session.value) manualReconnect(s);
  });
  s.on('connect_error', () => {
    if (!s.active) manualReconnect(s);
    notConnected();
  });
  s.io.on('reconnect_attempt', () => notConnected());
  s.on('session_ended', (data: { reason?: string } | undefined) => {
    const reason = data?.reason ?? '';
    sessionEnded(ENDED[reason] ?? (reason ? `Your session ended (${reason}): sign in again.` : 'Your session ended: sign in again.'));
  });
  s.on('resync', (data: { agentId?: string } | undefined) => {
    // Without an agent the gateway has taken this socket out of the live stream (it fell
    // behind, or the fan-out lost events): join again with `since`, and features refetch.
    if (data?.agentId) return;
    connectedSinceJoin = true;
    void join();
  });
  s.onAny((event: string, data: unknown) => dispatch(event, data));
  s.connect();
}

/** Reconnects a socket socket.io will not retry by itself (refused or closed by the server). */
function manualReconnect(s: Socket) {
  clearTimeout(manualRetry);
  const base = Math.min(10_000, 500 * 2 ** manualAttempts++);
  manualRetry = setTimeout(() => {
    if (socket === s && session.value && !s.connected) s.connect();
  }, base * (0.5 + Math.random()));
}

function close() {
  clearTimeout(joinRetry);
  clearTimeout(manualRetry);
  const s = socket;
  socket = null;
  joinedToken = null;
  connectedSinceJoin = false;
  s?.removeAllListeners();
  s?.offAny();
  s?.disconnect();
  connection.value = 'offline';
}

function whenOnline(timeoutMs: number): Promise<void> {
  if (connection.value === 'online' && socket?.connected) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const wake = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      waiters = waiters.filter((w) => w !== wake);
      reject(new Error('Not connected: try again when the connection is back.'));
    }, timeoutMs);
    waiters.push(wake);
  });
}

async function emit<T>(event: string, data: unknown, timeoutMs = ACK_TIMEOUT_MS): Promise<T> {
  const started = Date.now();
  await whenOnline(timeoutMs);
  const s = socket;
  if (!s) throw new Error('Not connected.');
  let ack: unknown;
  try {
    ack = await s.timeout(Math.max(1_000, timeoutMs - (Date.now() - started))).emitWithAck(event, data);
  } catch {
    throw new Error('No answer from the server: try again.');
  }
  if (ack && typeof ack === 'object' && (ack as { ok?: unknown }).ok === false) {
    const error = (ack as Refusal).error;
    // The socket's token lapsed (a phone asleep past its refresh): join again with a fresh one,
    // so that the caller's retry goes through.
    if (error?.code === 'unauthenticated' && s === socket) {
      void refreshAccess()
        .then((token) => {
          if (token && s === socket) void join();
        })
        .catch(() => {});
    }
    throw new Refused(error?.message ?? 'The server refused this.', error?.code ?? 'unknown', error?.retryAfter);
  }
  return ack as T;
}

function on<T>(event: string, handler: (data: T) => void): () => void {
  let set = handlers.get(event);
  if (!set) {
    set = new Set();
    handlers.set(event, set);
  }
  const h = handler as (data: unknown) => void;
  set.add(h);
  return () => {
    handlers.get(event)?.delete(h);
  };
}

function registerSince(provider: () => Record<string, number>): () => void {
  sinceProviders.add(provider);
  return () => {
    sinceProviders.delete(provider);
  };
}

function onJoined(handler: (ack: JoinAck) => void): () => void {
  joinedHandlers.add(handler);
  return () => {
    joinedHandlers.delete(handler);
  };
}

/** What the connection banner says: empty when online (and during a quick first connect). */
function bannerText(): string {
  switch (connection.value) {
    case 'online':
      return '';
    case 'connecting':
      return slowStart.value ? 'Offline · Connecting…' : '';
    case 'reconnecting':
      return 'Offline · Reconnecting…';
    case 'offline':
      return 'Offline';
  }
}

export const realtime = {
  /** `online` once joined to the team; `reconnecting` while socket.io retries. */
  connection,
  /** Listens to a server event; returns the unsubscribe. */
  on,
  /** Emits an event once joined; resolves with its ack, rejects with the refusal or on timeout. */
  emit,
  /** Adds agentId → last seq held to every `join_team {since}`; returns the unregister. */
  registerSince,
  /**
   * Called after every join that follows a (re)connect, so features refetch what they show
   * (not after a re-join that only swaps in a refreshed token: nothing was missed then).
   */
  onJoined,
  bannerText,
};

let started = false;
/** Opens the socket while signed in (once, from main). */
export function startRealtime(): void {
  if (started || typeof window === 'undefined') return;
  started = true;
  let who: string | null = null;
  effect(() => {
    const s = session.value;
    const key = s ? `${s.team.id}/${s.user.id}` : null;
    if (key === who) return;
    who = key;
    close();
    if (key) open();
  });
  // A refreshed token: join again with it before the old one lapses.
  effect(() => {
    const token = session.value?.accessToken;
    if (token && joinedToken && token !== joinedToken && socket?.connected) void join();
  });
  window.addEventListener('offline', () => {
    if (!socket) return;
    connection.value = 'offline';
    // Drop the dead transport now rather than at the next ping timeout; socket.io retries.
    socket.io.engine?.close();
  });
  window.addEventListener('online', () => {
    const s = socket;
    if (!s || s.connected) return;
    // Back now: skip what is left of the backoff.
    connection.value = 'reconnecting';
    s.disconnect();
    s.connect();
  });
}
