// What an agent's output line shows: each line's structured `event` (the gateway's reading of
// Claude Code stream-json, see services/orchestrator/src/stream_json.rs) becomes display items.
// Pure: no DOM, so it is unit-tested as it is.

import { diffLines } from 'diff';

/** One output line as the store holds it (a REST chunk or an `agent_output` event). */
export interface Line {
  seq: number;
  stream: 'stdout' | 'stderr';
  data: string;
  event: unknown;
}

/** A file change a tool call makes: the text before and after. */
export interface FileEdit {
  path: string;
  before: string;
  after: string;
}

export type Item =
  | { t: 'text'; text: string }
  | { t: 'thinking'; text: string }
  | { t: 'user'; text: string }
  | { t: 'tool'; id: string; name: string; summary: string; input: unknown; edits: FileEdit[] }
  | { t: 'result'; tool: string | null; text: string; isError: boolean }
  | { t: 'init'; model: string; cwd: string; tools: number }
  | { t: 'system'; subtype: string }
  | {
      t: 'final';
      isError: boolean;
      costUsd: number | null;
      turns: number | null;
      durationMs: number | null;
      text: string;
    }
  | { t: 'stderr'; text: string }
  | { t: 'raw'; text: string }
  | { t: 'other'; blockType: string };

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** A one-line summary of a tool call: what it acts on. */
export function toolSummary(name: string, input: unknown): string {
  if (!isObj(input)) return '';
  let s = '';
  switch (name) {
    case 'Bash':
      s = str(input.command);
      break;
    case 'Read':
    case 'Edit':
    case 'MultiEdit':
    case 'Write':
      s = str(input.file_path) || str(input.path);
      break;
    case 'NotebookEdit':
      s = str(input.notebook_path);
      break;
    case 'Grep':
    case 'Glob':
      s = str(input.pattern);
      break;
    default:
      for (const v of Object.values(input)) {
        if (typeof v === 'string' && v.trim()) {
          s = v;
          break;
        }
      }
  }
  return oneLine(s);
}

/** The first line of a text, at most `max` characters. */
export function oneLine(s: string, max = 160): string {
  const nl = s.indexOf('\n');
  const first = (nl >= 0 ? s.slice(0, nl) + ' …' : s).trim();
  return first.length > max ? first.slice(0, max - 1) + '…' : first;
}

/** The file changes of an Edit, MultiEdit or Write call. */
export function fileEdits(name: string, input: unknown): FileEdit[] {
  if (!isObj(input)) return [];
  const path = str(input.file_path) || str(input.path);
  switch (name) {
    case 'Edit':
      return typeof input.old_string === 'string' || typeof input.new_string === 'string'
        ? [{ path, before: str(input.old_string), after: str(input.new_string) }]
        : [];
    case 'MultiEdit':
      return Array.isArray(input.edits)
        ? input.edits.filter(isObj).map((e) => ({ path, before: str(e.old_string), after: str(e.new_string) }))
        : [];
    case 'Write':
      return typeof input.content === 'string' ? [{ path, before: '', after: input.content }] : [];
    default:
      return [];
  }
}

/** A tool result's content as text (text parts joined; other parts named). */
export function resultText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((part) => (isObj(part) ? (part.type === 'text' ? str(part.text) : `[${str(part.type) || 'part'}]`) : ''))
      .filter(Boolean)
      .join('\n');
  }
  return '';
}

function blockItems(kind: 'assistant' | 'user', blocks: unknown, tools: Map<string, string> | undefined): Item[] {
  if (!Array.isArray(blocks)) return [];
  const items: Item[] = [];
  for (const b of blocks) {
    if (!isObj(b)) continue;
    switch (b.type) {
      case 'text':
        items.push(kind === 'assistant' ? { t: 'text', text: str(b.text) } : { t: 'user', text: str(b.text) });
        break;
      case 'thinking':
        items.push({ t: 'thinking', text: str(b.text) });
        break;
      case 'tool_use': {
        const name = str(b.name) || 'tool';
        const id = str(b.id);
        if (id) tools?.set(id, name);
        items.push({ t: 'tool', id, name, summary: toolSummary(name, b.input), input: b.input, edits: fileEdits(name, b.input) });
        break;
      }
      case 'tool_result':
        items.push({
          t: 'result',
          tool: tools?.get(str(b.toolUseId)) ?? null,
          text: resultText(b.content),
          isError: b.isError === true,
        });
        break;
      default:
        items.push({ t: 'other', blockType: str(b.blockType) || str(b.type) || 'unknown' });
    }
  }
  return items;
}

/**
 * The display items of one line. `tools` (tool use id → name, filled as tool calls are seen)
 * lets a tool result say which tool it answers.
 */
export function display(line: Line, tools?: Map<string, string>): Item[] {
  if (line.stream === 'stderr') return [{ t: 'stderr', text: line.data }];
  const e = line.event;
  if (isObj(e)) {
    switch (e.kind) {
      case 'init':
        return [{ t: 'init', model: str(e.model) || 'unknown model', cwd: str(e.cwd), tools: Array.isArray(e.tools) ? e.tools.length : 0 }];
      case 'assistant':
      case 'user': {
        const items = blockItems(e.kind, e.blocks, tools);
        if (items.length) return items;
        break;
      }
      case 'result':
        return [
          {
            t: 'final',
            isError: e.isError === true,
            costUsd: num(e.costUsd),
            turns: num(e.turns),
            durationMs: num(e.durationMs),
            text: str(e.result),
          },
        ];
      case 'system':
        return [{ t: 'system', subtype: typeof e.subtype === 'string' ? e.subtype : 'event' }];
    }
  }
  return [{ t: 'raw', text: line.data }];
}

export interface DiffRow {
  kind: 'add' | 'del' | 'same';
  text: string;
}

/** A line diff of two texts (a slow diff of huge texts gives up: all removed, all added). */
export function diffRows(before: string, after: string): DiffRow[] {
  const rows: DiffRow[] = [];
  const push = (kind: DiffRow['kind'], value: string) => {
    const lines = value.split('\n');
    if (lines.length > 1 && lines[lines.length - 1] === '') lines.pop();
    for (const text of lines) rows.push({ kind, text });
  };
  if (!before) {
    push('add', after);
    return rows;
  }
  const changes = diffLines(before, after, { timeout: 100 });
  if (!changes) {
    push('del', before);
    push('add', after);
    return rows;
  }
  for (const c of changes) push(c.added ? 'add' : c.removed ? 'del' : 'same', c.value);
  return rows;
}

// Numbers as people read them.

export function formatCost(usd: number | null | undefined): string {
  if (usd == null) return '—';
  return usd < 1 ? `$${usd.toFixed(4)}` : `$${usd.toFixed(2)}`;
}

export function formatDuration(ms: number | null | undefined): string {
  if (ms == null || ms < 0) return '—';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  return `${h}h ${String(m % 60).padStart(2, '0')}m`;
}

/** How an agent's status reads, and whether it is still going. */
export const STATUS: Record<string, { word: string; live: boolean }> = {
  pending: { word: 'Pending', live: true },
  starting: { word: 'Starting', live: true },
  running: { word: 'Running', live: true },
  waiting_for_approval: { word: 'Waiting for approval', live: true },
  completed: { word: 'Completed', live: false },
  failed: { word: 'Failed', live: false },
  killed: { word: 'Killed', live: false },
  lost: { word: 'Lost', live: false },
  unknown: { word: 'Unknown', live: false },
};

export const isLive = (status: string): boolean => STATUS[status]?.live ?? false;
