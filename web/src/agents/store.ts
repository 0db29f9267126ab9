// The team's agents and, per agent whose view has been open, its output lines.
//
// Agents: GET /api/agent/list, then `agent_status` events; refetched after every (re)join.
// Lines: history over REST in pages, then live `agent_output`; the resume book (realtime/
// resume.ts) drops duplicates and holds back lines past a gap until history fills it, so the view
// never shows either. After a reconnect the book's since-map makes the gateway replay what was
// missed; a `resync` is followed by catching up from history.

import { batch, effect, signal, type Signal } from '@preact/signals';
import type { components } from '../api/schema.gen';
import { api, errorMessage } from '../api/client';
import { session } from '../api/session';
import { realtime } from '../realtime/socket';
import { ResumeBook } from '../realtime/resume';
import { isLive, type Line } from './render';

export type Agent = components['schemas']['Agent'];
type Vm = components['schemas']['VmView'];

/** The team's agents by id. */
export const agents: Signal<Map<string, Agent>> = signal(new Map());
/** The list has been read since sign-in. */
export const agentsLoaded = signal(false);
/** Display names by user id. */
export const members: Signal<Map<string, string>> = signal(new Map());
/** The member's own VMs (what the spawn sheet offers). */
export const vms: Signal<Vm[] | null> = signal(null);
/** The time elapsed counters show, ticking once a second. */
export const now = signal(Date.now());

export interface Note {
  id: number;
  agentId: string;
  text: string;
  tone: 'ok' | 'bad';
}
/** Agents that finished or failed while we looked. */
export const notifications = signal<Note[]>([]);

/** One agent's output as held by the client. */
export interface AgentOutput {
  id: string;
  /** Contiguous in seq order: exactly what the view shows. */
  lines: Line[];
  /** Bumped (once a frame at most) when lines change. */
  version: Signal<number>;
  /** History is still being fetched for the first time. */
  loading: Signal<boolean>;
  /** Output that could not be had (history gone), said once. */
  notice: Signal<string | null>;
  /** Tool use id → tool name, for results to say what they answer. */
  tools: Map<string, string>;
  filling: boolean;
  refill: boolean;
  bumped: boolean;
}

const PAGE = 5000;
const book = new ResumeBook<Line>();
const outputs = new Map<string, AgentOutput>();
/** Held agents, the most recently opened last; the oldest are let go beyond this many. */
const MAX_HELD = 6;

export const myUserId = (): string | undefined => session.value?.user.id;
export const ownerName = (userId: string): string =>
  members.value.get(userId) ?? (userId === myUserId() ? (session.value?.user.displayName ?? 'You') : 'A teammate');

/** Names of members who joined since the team was read, from presence. */
function onPresence(p: { users?: { userId: string; displayName: string }[] }) {
  const known = members.value;
  const fresh = p?.users?.filter((u) => u.displayName && known.get(u.userId) !== u.displayName) ?? [];
  if (!fresh.length) return;
  const next = new Map(known);
  for (const u of fresh) next.set(u.userId, u.displayName);
  members.value = next;
}

function setAgent(agent: Agent) {
  const next = new Map(agents.value);
  next.set(agent.id, agent);
  agents.value = next;
}

let noteId = 0;
function notify(agent: Agent) {
  const word = agent.status === 'completed' ? 'finished' : agent.status;
  const exit = agent.status === 'failed' && agent.exitCode != null ? ` (exit ${agent.exitCode})` : '';
  const note: Note = {
    id: ++noteId,
    agentId: agent.id,
    text: `${ownerName(agent.owner)}’s agent “${agent.task}” ${word}${exit}`,
    tone: agent.status === 'completed' ? 'ok' : 'bad',
  };
  notifications.value = [...notifications.value, note].slice(-4);
  setTimeout(() => dismiss(note.id), 12_000);
}

export function dismiss(id: number) {
  notifications.value = notifications.value.filter((n) => n.id !== id);
}

/**
 * How far along a status is: an answer read before a newer event never takes an agent back.
 * Waiting for approval is running too (it goes back and forth between the two).
 */
const stage = (status: string): number =>
  status === 'pending' ? 0 : status === 'starting' ? 1 : status === 'running' || status === 'waiting_for_approval' ? 2 : 3;

/** `next` unless it is older news than `prev` (then `prev`'s status and times stand). */
function newer(prev: Agent | undefined, next: Agent): Agent {
  if (!prev || stage(next.status) >= stage(prev.status)) return next;
  return { ...next, status: prev.status, exitCode: prev.exitCode, startedAt: prev.startedAt, finishedAt: prev.finishedAt };
}

/** Merges what the server says of an agent, noting those that just stopped. */
function merge(agent: Agent) {
  const prev = agents.value.get(agent.id);
  const next = newer(prev, agent);
  setAgent(next);
  if (prev && isLive(prev.status) && !isLive(next.status)) notify(next);
}

async function refreshAgents() {
  const { data } = await api.GET('/api/agent/list');
  if (!data) return;
  const next = new Map<string, Agent>();
  const stopped: Agent[] = [];
  for (const listed of data.agents) {
    const prev = agents.value.get(listed.id);
    const a = newer(prev, listed);
    next.set(a.id, a);
    if (prev && isLive(prev.status) && !isLive(a.status)) stopped.push(a);
  }
  batch(() => {
    agents.value = next;
    agentsLoaded.value = true;
  });
  stopped.forEach(notify);
}

async function refreshMembers() {
  const { data } = await api.GET('/api/team');
  if (!data) return;
  members.value = new Map(data.members.map((m) => [m.id, m.displayName]));
}

export async function refreshVms(): Promise<void> {
  const { data } = await api.GET('/api/vm/list');
  vms.value = data?.vms ?? [];
}

/** Agents being read again: `true` when asked once more meanwhile. */
const refreshing = new Map<string, boolean>();
/** Reads one agent again (one read at a time per agent): its cost, turns and times. */
function refreshAgent(id: string) {
  if (refreshing.has(id)) {
    refreshing.set(id, true);
    return;
  }
  refreshing.set(id, false);
  api
    .GET('/api/agent/{id}', { params: { path: { id } } })
    .then(({ data }) => {
      if (data) merge(data.agent);
    })
    .catch(() => {})
    .finally(() => {
      const again = refreshing.get(id);
      refreshing.delete(id);
      if (again) refreshAgent(id);
    });
}

interface StatusEvent {
  agentId: string;
  owner: string;
  status: Agent['status'];
  exitCode?: number | null;
  task: string;
  at: number;
}

function onStatus(s: StatusEvent) {
  const prev = agents.value.get(s.agentId);
  const agent: Agent = prev
    ? { ...prev, status: s.status, exitCode: s.exitCode ?? prev.exitCode }
    : {
        id: s.agentId,
        owner: s.owner,
        task: s.task,
        status: s.status,
        exitCode: s.exitCode ?? null,
        teamId: session.value?.team.id ?? '',
        vmId: '',
        createdAt: s.at,
        outputSeq: 0,
      };
  if (s.status === 'running' && agent.startedAt == null) agent.startedAt = s.at;
  if (!isLive(s.status) && agent.finishedAt == null) agent.finishedAt = s.at;
  merge(agent);
  refreshAgent(s.agentId);
}

interface OutputEvent {
  agentId: string;
  owner: string;
  seq: number;
  stream: 'stdout' | 'stderr';
  data: string;
  event: unknown;
  canControl?: boolean;
}

function onOutput(o: OutputEvent) {
  const ev = o.event as { kind?: string; costUsd?: number; turns?: number; durationMs?: number } | null;
  if (ev?.kind === 'result') {
    const prev = agents.value.get(o.agentId);
    if (prev) setAgent({ ...prev, costUsd: ev.costUsd ?? prev.costUsd, turns: ev.turns ?? prev.turns, durationMs: ev.durationMs ?? prev.durationMs });
  }
  const out = outputs.get(o.agentId);
  const seq = book.get(o.agentId);
  if (!out || !seq) return;
  append(out, seq.offer({ seq: o.seq, stream: o.stream, data: o.data, event: o.event }));
  if (seq.gap()) void fill(out);
}

function onResync(r: { agentId?: string; reason?: string; availableFrom?: number }) {
  if (r.agentId) {
    const out = outputs.get(r.agentId);
    const seq = book.get(r.agentId);
    if (!out || !seq) return;
    if (r.availableFrom != null && seq.last + 1 < r.availableFrom) lost(out, r.availableFrom);
    void fill(out);
    return;
  }
  // The socket left the live stream: catch every held agent up from history (the transport
  // rejoins with `since`; whichever comes first, the other's lines are duplicates).
  for (const out of outputs.values()) void fill(out);
}

function lost(out: AgentOutput, from: number) {
  const seq = book.get(out.id);
  if (!seq) return;
  const missingFrom = seq.last + 1;
  append(out, seq.skipTo(from));
  // Said in lines counted from 1, as the reader counts them.
  const range = missingFrom + 1 === from ? `Line ${from}` : `Lines ${missingFrom + 1}–${from}`;
  out.notice.value = `${range} of the output ${missingFrom + 1 === from ? 'is' : 'are'} no longer available.`;
}

/** Tool names by tool use id, as lines are added (a result may be shown without its call). */
function noteTools(out: AgentOutput, line: Line) {
  const ev = line.event as { kind?: string; blocks?: unknown };
  if (ev?.kind !== 'assistant' || !Array.isArray(ev.blocks)) return;
  for (const b of ev.blocks as { type?: string; id?: string; name?: string }[]) {
    if (b?.type === 'tool_use' && b.id && b.name) out.tools.set(b.id, b.name);
  }
}

const frame =
  typeof requestAnimationFrame === 'function'
    ? (f: () => void) => (document.hidden ? setTimeout(f, 100) : requestAnimationFrame(f))
    : (f: () => void) => setTimeout(f, 16);

function append(out: AgentOutput, lines: Line[]) {
  if (!lines.length) return;
  for (const l of lines) {
    noteTools(out, l);
    out.lines.push(l);
  }
  if (!out.bumped) {
    out.bumped = true;
    frame(() => {
      out.bumped = false;
      out.version.value++;
    });
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Fetches history from the last contiguous seq on until it is caught up and no gap is left;
 * one run per agent at a time (a request meanwhile runs it once more).
 */
async function fill(out: AgentOutput): Promise<void> {
  if (out.filling) {
    out.refill = true;
    return;
  }
  out.filling = true;
  let idle = 0;
  let failures = 0;
  try {
    for (;;) {
      const seq = book.get(out.id);
      if (!seq || outputs.get(out.id) !== out) return;
      const from = seq.last + 1;
      const { data, response } = await api
        .GET('/api/agent/{id}/output', { params: { path: { id: out.id }, query: { fromSeq: from, limit: PAGE } } })
        .catch(() => ({ data: undefined, response: undefined }));
      if (!data) {
        // Gone (404) or refused: nothing to fill. Otherwise the next (re)join fills it.
        if (response && response.status < 500 && response.status !== 429) return;
        if (++failures > 4) return;
        await sleep(500 * 2 ** failures);
        continue;
      }
      failures = 0;
      const chunks = data.chunks;
      const first = chunks[0];
      if (first && first.seq > from) lost(out, first.seq);
      append(out, seq.offerAll(chunks.map((c) => ({ seq: c.seq, stream: c.stream, data: c.data, event: c.event }))));
      if (out.loading.value) out.loading.value = false;
      const gap = seq.gap();
      if (chunks.length === 0) {
        if (!gap) return;
        // Lines published live but not durable yet: they will be, look again shortly; lines
        // that never become history are said to be missing rather than waited for forever.
        if (++idle > 40) {
          lost(out, gap.to + 1);
          return;
        }
        await sleep(150);
        continue;
      }
      idle = 0;
      // A page is bounded in bytes too: a short one may still say there is more.
      if (!data.more && !gap) return;
    }
  } finally {
    out.filling = false;
    out.loading.value = false;
    if (out.refill) {
      out.refill = false;
      void fill(out);
    }
  }
}

/** The output of an agent, held from now on (history fetched, live lines kept). */
export function holdOutput(id: string): AgentOutput {
  start();
  let out = outputs.get(id);
  if (out) {
    // Most recently used last.
    outputs.delete(id);
    outputs.set(id, out);
    return out;
  }
  out = {
    id,
    lines: [],
    version: signal(0),
    loading: signal(true),
    notice: signal(null),
    tools: new Map(),
    filling: false,
    refill: false,
    bumped: false,
  };
  outputs.set(id, out);
  book.hold(id);
  for (const old of outputs.keys()) {
    if (outputs.size <= MAX_HELD) break;
    outputs.delete(old);
    book.release(old);
  }
  void fill(out);
  return out;
}

/** Starts an agent (the API's message on refusal, e.g. a rate limit with its retry time). */
export async function spawn(task: string, vmId: string | null): Promise<Agent> {
  const { data, error } = await api.POST('/api/agent/spawn', { body: { task, vmId: vmId || undefined } });
  if (!data) throw new Error(errorMessage(error));
  merge(data.agent);
  return data.agent;
}

/** Kill, interrupt or input for one of the member's own agents. */
export async function control(agentId: string, command: 'kill' | 'interrupt' | 'input', data?: string): Promise<void> {
  if (command === 'kill' && realtime.connection.value !== 'online') {
    const { error } = await api.DELETE('/api/agent/{id}', { params: { path: { id: agentId } } });
    if (error) throw new Error(errorMessage(error));
    return;
  }
  await realtime.emit('agent_control', { agentId, command, data });
}

/** Says which agent view this device has open (`null`: none). */
export function watch(agentId: string | null) {
  watching = agentId;
  realtime.emit('agent_watch', { agentId }).catch(() => {});
}
let watching: string | null = null;

function reset() {
  batch(() => {
    agents.value = new Map();
    agentsLoaded.value = false;
    members.value = new Map();
    vms.value = null;
    notifications.value = [];
  });
  for (const id of outputs.keys()) book.release(id);
  outputs.clear();
}

let started = false;
/** Subscribes to the team's events once (the deck or an agent view starts it). */
export function start() {
  if (started) return;
  started = true;
  realtime.on('agent_status', (s: StatusEvent) => onStatus(s));
  realtime.on('agent_output', (o: OutputEvent) => onOutput(o));
  realtime.on('team_presence', onPresence);
  realtime.on('resync', (r: { agentId?: string; reason?: string; availableFrom?: number }) => onResync(r ?? {}));
  realtime.registerSince(() => book.since());
  realtime.onJoined(() => {
    void refreshAgents().catch(() => {});
    void refreshMembers().catch(() => {});
    for (const out of outputs.values()) void fill(out);
    // Watching is per socket: a new socket says it again.
    if (watching) realtime.emit('agent_watch', { agentId: watching }).catch(() => {});
  });
  let who: string | undefined;
  effect(() => {
    const s = session.value;
    const key = s ? `${s.team.id}/${s.user.id}` : undefined;
    if (key === who) return;
    if (who !== undefined) reset();
    who = key;
    if (key) {
      void refreshAgents().catch(() => {});
      void refreshMembers().catch(() => {});
    }
  });
  setInterval(() => {
    for (const a of agents.value.values()) {
      if (isLive(a.status)) {
        now.value = Date.now();
        return;
      }
    }
  }, 1000);
}

// For tests and diagnosis: exactly the seqs the agent view holds for an agent, in order.
if (typeof window !== 'undefined') {
  const w = window as unknown as { covibe?: Record<string, unknown> };
  w.covibe = { ...w.covibe, agentSeqs: (id: string) => outputs.get(id)?.lines.map((l) => l.seq) ?? [] };
}

/** How long an agent has run (until now while it runs). */
export function elapsedMs(a: Agent, at: number): number | null {
  const from = a.startedAt ?? a.createdAt;
  if (a.finishedAt != null) return a.finishedAt - from;
  if (!isLive(a.status)) return a.durationMs ?? null;
  return Math.max(0, at - from);
}

export { errorMessage };

// The team's agents are wanted on every screen (chat links, presence, the page title): listen
// from the start.
if (typeof window !== 'undefined') start();
