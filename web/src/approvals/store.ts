// The team's tool requests that wait for an answer, by `agentId/requestId`.
//
// In: `agent_permission` (sent to every member; `canAnswer` on the owner's sockets only, and sent
// again for every waiting request after each join), `agent_permission_resolved`, and
// `GET /api/agent/permissions` after every (re)join, which also drops what was decided while
// away. Out: the owner's answer (`agent_permission_answer`, or REST while offline). A request
// just decided is kept a moment in `decided`, so its card can say what became of it.

import { batch, computed, effect, signal, type Signal } from '@preact/signals';
import type { components } from '../api/schema.gen';
import { api, errorMessage } from '../api/client';
import { session } from '../api/session';
import { members } from '../agents/store';
import { realtime, Refused } from '../realtime/socket';
import { alreadyAnswered, forTool, outcome, type Answer, type Outcome } from './summary';

export type PermissionRequest = components['schemas']['PermissionRequest'];

/** A waiting request, and whether this member may answer it (the agent's owner). */
export interface Waiting extends PermissionRequest {
  canAnswer: boolean;
}

/** A request just decided: what its card says until it goes. */
export interface Decided extends Outcome {
  key: string;
  request: Waiting;
}

/** How long a decided request's outcome stays on its card. */
export const OUTCOME_MS = 6_000;
/** Keys of requests known decided, so a late copy (a list read meanwhile) does not bring one back. */
const MAX_FINISHED = 500;

export const keyOf = (agentId: string, requestId: string): string => `${agentId}/${requestId}`;

/** Waiting requests by key. */
export const waiting: Signal<Map<string, Waiting>> = signal(new Map());
/** Requests decided a moment ago, by key. */
export const decided: Signal<Map<string, Decided>> = signal(new Map());
/** The answer this device is sending, by key (its card's buttons wait meanwhile). */
export const answering: Signal<Map<string, Answer>> = signal(new Map());

/** Waiting requests this member may answer, oldest first (the Command Deck's notifications). */
export const mine = computed(() =>
  [...waiting.value.values()].filter((r) => r.canAnswer).sort((a, b) => a.createdAt - b.createdAt),
);

/** An agent's waiting requests, oldest first. */
export function waitingOn(agentId: string): Waiting[] {
  return [...waiting.value.values()].filter((r) => r.agentId === agentId).sort((a, b) => a.createdAt - b.createdAt);
}

/** An agent's requests decided a moment ago. */
export function decidedOn(agentId: string): Decided[] {
  return [...decided.value.values()].filter((d) => d.request.agentId === agentId);
}

const finished = new Set<string>();
/** Keys added by events since the list was asked for (the list may not have them yet). */
let addedSinceList = new Set<string>();
const timers = new Map<string, ReturnType<typeof setTimeout>>();

const me = (): string | undefined => session.value?.user.id;
/** A member's name as an outcome says it ("you" for the reader). */
const nameOf = (userId: string): string => (userId === me() ? 'you' : (members.value.get(userId) ?? 'a teammate'));

function markFinished(key: string) {
  finished.delete(key);
  finished.add(key);
  if (finished.size > MAX_FINISHED) finished.delete(finished.values().next().value as string);
}

function put(request: Waiting) {
  const key = keyOf(request.agentId, request.requestId);
  if (finished.has(key)) return;
  const next = new Map(waiting.value);
  next.set(key, request);
  waiting.value = next;
}

function drop(key: string): Waiting | undefined {
  const request = waiting.value.get(key);
  if (request) {
    const next = new Map(waiting.value);
    next.delete(key);
    waiting.value = next;
  }
  return request;
}

function show(key: string, request: Waiting, said: Outcome) {
  const next = new Map(decided.value);
  next.set(key, { key, request, ...said });
  decided.value = next;
  clearTimeout(timers.get(key));
  timers.set(
    key,
    setTimeout(() => {
      timers.delete(key);
      const later = new Map(decided.value);
      later.delete(key);
      decided.value = later;
    }, OUTCOME_MS),
  );
}

/** Decided: out of the waiting set, its outcome shown a moment (when it was shown at all). */
function settle(key: string, said: Outcome, known?: Waiting) {
  markFinished(key);
  batch(() => {
    const request = drop(key) ?? known;
    if (request) show(key, request, forTool(said, request.tool));
  });
}

interface PermissionEvent extends Partial<PermissionRequest> {
  canAnswer?: boolean;
}

function onPermission(e: PermissionEvent) {
  if (!e || typeof e.agentId !== 'string' || typeof e.requestId !== 'string') return;
  if (e.state && e.state !== 'pending') return;
  const key = keyOf(e.agentId, e.requestId);
  addedSinceList.add(key);
  put({
    agentId: e.agentId,
    requestId: e.requestId,
    owner: e.owner ?? '',
    tool: e.tool ?? 'tool',
    input: e.input ?? {},
    summary: e.summary ?? '',
    state: 'pending',
    createdAt: e.createdAt ?? Date.now(),
    expiresAt: e.expiresAt ?? 0,
    toolUseId: e.toolUseId ?? null,
    canAnswer: e.canAnswer ?? (e.owner !== undefined && e.owner === me()),
  });
}

interface ResolvedEvent {
  agentId: string;
  requestId: string;
  owner?: string;
  decision: string;
  decidedBy?: string | null;
}

function onResolved(e: ResolvedEvent) {
  if (!e || typeof e.agentId !== 'string' || typeof e.requestId !== 'string') return;
  const key = keyOf(e.agentId, e.requestId);
  settle(key, outcome(e.decision, e.decidedBy, nameOf, answering.value.get(key)));
}

/** Reads the team's waiting requests: what is listed waits; what is not was decided meanwhile. */
export async function refresh(): Promise<void> {
  addedSinceList = new Set();
  const { data } = await api.GET('/api/agent/permissions');
  if (!data) return;
  const listed = new Map<string, Waiting>();
  for (const r of data.requests) {
    if (r.state !== 'pending') continue;
    const key = keyOf(r.agentId, r.requestId);
    if (finished.has(key)) continue;
    const known = waiting.value.get(key);
    listed.set(key, { ...r, canAnswer: known?.canAnswer ?? r.owner === me() });
  }
  // Sent by events while the list was read: newer than the list.
  for (const key of addedSinceList) {
    const known = waiting.value.get(key);
    if (known && !listed.has(key)) listed.set(key, known);
  }
  waiting.value = listed;
}

/**
 * The owner's answer. Resolves with what became of the request (also shown on its card a
 * moment); a `conflict` (answered already, by another device or the timeout) resolves as
 * "Already answered"; any other refusal rejects with its message and the request still waits.
 * `updatedInput`, with an allow: the input the tool runs with instead (an answered question).
 */
export async function answer(
  request: Waiting,
  decision: Answer,
  message?: string,
  updatedInput?: Record<string, unknown>,
): Promise<Outcome> {
  const key = keyOf(request.agentId, request.requestId);
  answering.value = new Map(answering.value).set(key, decision);
  try {
    let state: string;
    let decidedBy: string | null | undefined;
    if (realtime.connection.value === 'online') {
      const ack = await realtime.emit<{ ok: true; request?: PermissionRequest }>('agent_permission_answer', {
        agentId: request.agentId,
        requestId: request.requestId,
        decision,
        ...(message ? { message } : {}),
        ...(updatedInput ? { updatedInput } : {}),
      });
      state = ack.request?.state ?? (decision === 'deny' ? 'denied' : 'allowed');
      decidedBy = ack.request?.decidedBy ?? me();
    } else {
      const { data, error, response } = await api.POST('/api/agent/{id}/permissions/{requestId}', {
        params: { path: { id: request.agentId, requestId: request.requestId } },
        body: { decision, ...(message ? { message } : {}), ...(updatedInput ? { updatedInput } : {}) },
      });
      if (!data) {
        const code = (error as { error?: { code?: string } } | undefined)?.error?.code;
        if (code === 'conflict' || response.status === 409) throw new Refused(errorMessage(error), 'conflict');
        throw new Error(errorMessage(error));
      }
      state = data.request.state;
      decidedBy = data.request.decidedBy ?? me();
    }
    const said = outcome(state, decidedBy, nameOf, decision);
    settle(key, said, request);
    return said;
  } catch (err) {
    if (err instanceof Refused && err.code === 'conflict') {
      const said = alreadyAnswered(err.message);
      settle(key, said, request);
      return said;
    }
    throw err;
  } finally {
    const next = new Map(answering.value);
    next.delete(key);
    answering.value = next;
  }
}

function reset() {
  for (const t of timers.values()) clearTimeout(t);
  timers.clear();
  finished.clear();
  addedSinceList = new Set();
  batch(() => {
    waiting.value = new Map();
    decided.value = new Map();
    answering.value = new Map();
  });
}

let started = false;
/** Subscribes to the team's tool requests once (on load in the browser). */
export function startApprovals(): void {
  if (started) return;
  started = true;
  realtime.on('agent_permission', (e: PermissionEvent) => onPermission(e));
  realtime.on('agent_permission_resolved', (e: ResolvedEvent) => onResolved(e));
  // Every join, first or after a reconnect: the gateway sends the waiting ones again as events,
  // and the list says which of those held here were decided while away.
  realtime.onJoined(() => void refresh().catch(() => {}));
  let who: string | undefined;
  effect(() => {
    const s = session.value;
    const key = s ? `${s.team.id}/${s.user.id}` : undefined;
    if (key === who) return;
    if (who !== undefined) reset();
    who = key;
  });
}

if (typeof window !== 'undefined') startApprovals();
