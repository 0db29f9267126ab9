// What a tool request shows a person deciding on it: the command for Bash, the file and its
// before/after for Edit and Write, the questions for AskUserQuestion, else the server's one-line
// summary and the input. Also how an outcome and the time left read. Pure: unit-tested as it is.

import { fileEdits, oneLine, type FileEdit } from '../agents/render';

/** The parts of a request this reads (an `agent_permission` event or a listed request). */
export interface RequestLike {
  tool: string;
  input: unknown;
  summary: string;
}

export interface Question {
  question: string;
  header: string;
  options: { label: string; description: string }[];
  multiSelect: boolean;
}

export type Shown =
  | { kind: 'command'; command: string; description: string }
  | { kind: 'edit'; path: string; edits: FileEdit[] }
  | { kind: 'ask'; questions: Question[] }
  | { kind: 'other'; text: string; input: string };

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string => (typeof v === 'string' ? v : '');

/** Input shown for a tool this does not know, at most this many characters. */
const MAX_INPUT = 600;

function questions(input: Obj): Question[] {
  if (!Array.isArray(input.questions)) return [];
  return input.questions.filter(isObj).map((q) => ({
    question: str(q.question),
    header: str(q.header),
    options: Array.isArray(q.options)
      ? q.options.filter(isObj).map((o) => ({ label: str(o.label), description: str(o.description) }))
      : [],
    multiSelect: q.multiSelect === true,
  }));
}

/** What the owner picked for one question: option labels, and their own words ("Other"). */
export interface Choice {
  labels: string[];
  other: string;
}

/** One question's answer as Claude Code reads it: the labels (or own words), comma-separated. */
export function answerText(choice: Choice | undefined): string {
  if (!choice) return '';
  const other = choice.other.trim();
  return [...choice.labels, ...(other ? [other] : [])].join(', ');
}

/**
 * The input an answered `AskUserQuestion` is allowed with: its own input plus `answers`, each
 * question's text to its answer. `null` while a question has no answer yet.
 */
export function answeredInput(input: unknown, choices: (Choice | undefined)[]): Record<string, unknown> | null {
  const obj = isObj(input) ? input : {};
  const qs = questions(obj).filter((q) => q.question);
  if (!qs.length) return null;
  const answers: Record<string, string> = {};
  for (const [i, q] of qs.entries()) {
    const text = answerText(choices[i]);
    if (!text) return null;
    answers[q.question] = text;
  }
  return { ...obj, answers };
}

/** How a request is shown on its card. */
export function shown(request: RequestLike): Shown {
  const input = isObj(request.input) ? request.input : {};
  switch (request.tool) {
    case 'Bash': {
      const command = str(input.command);
      if (command) return { kind: 'command', command, description: str(input.description) };
      break;
    }
    case 'Edit':
    case 'MultiEdit':
    case 'Write': {
      const edits = fileEdits(request.tool, input);
      const path = str(input.file_path) || str(input.path) || edits[0]?.path || '';
      if (path || edits.length) return { kind: 'edit', path, edits };
      break;
    }
    case 'AskUserQuestion': {
      const qs = questions(input).filter((q) => q.question);
      if (qs.length) return { kind: 'ask', questions: qs };
      break;
    }
  }
  const json = Object.keys(input).length ? JSON.stringify(input, null, 2) : '';
  return {
    kind: 'other',
    text: request.summary || request.tool,
    input: json.length > MAX_INPUT ? json.slice(0, MAX_INPUT - 1) + '…' : json,
  };
}

/** One line for a list or a teammate: the server's summary, else what the input says. */
export function shortSummary(request: RequestLike, max = 140): string {
  if (request.summary.trim()) return oneLine(request.summary, max);
  const s = shown(request);
  switch (s.kind) {
    case 'command':
      return oneLine(s.command, max);
    case 'edit':
      return oneLine(s.path || request.tool, max);
    case 'ask':
      return oneLine(s.questions[0]?.question ?? request.tool, max);
    case 'other':
      return oneLine(s.text, max);
  }
}

/** What the tool would do, as a heading word: "Run a command", "Edit a file"... */
export function action(tool: string): string {
  switch (tool) {
    case 'Bash':
      return 'Run a command';
    case 'Edit':
    case 'MultiEdit':
      return 'Edit a file';
    case 'Write':
      return 'Write a file';
    case 'AskUserQuestion':
      return 'A question for you';
    case 'WebFetch':
      return 'Fetch a web page';
    case 'WebSearch':
      return 'Search the web';
    default:
      return `Use ${tool}`;
  }
}

/** What became of a request (the `decision` of `agent_permission_resolved`, or an ack's state). */
export type Decision = 'allowed' | 'denied' | 'timed_out';
/** What the owner answered. */
export type Answer = 'allow' | 'deny' | 'allow_always_for_agent';

export interface Outcome {
  text: string;
  tone: 'ok' | 'bad' | 'warn';
}

/**
 * How an outcome reads. `decidedBy` is a member's id, `timeout` or `ended`; `name` turns an id
 * into a name ("you" for the reader); `answer` is what this device answered, if it did.
 */
export function outcome(
  decision: string,
  decidedBy: string | null | undefined,
  name: (userId: string) => string,
  answer?: Answer,
): Outcome {
  if (decidedBy === 'ended') return { text: 'Not needed: the agent ended first', tone: 'warn' };
  if (decision === 'timed_out' || decidedBy === 'timeout') {
    return { text: 'Not answered in time: denied', tone: 'warn' };
  }
  const by = decidedBy ? ` by ${name(decidedBy)}` : '';
  if (decision === 'allowed') {
    return answer === 'allow_always_for_agent'
      ? { text: `Allowed${by}, and always for this agent from now on`, tone: 'ok' }
      : { text: `Allowed${by}`, tone: 'ok' };
  }
  return { text: `Denied${by}`, tone: 'bad' };
}

/** An outcome in a question's words: a question is answered or declined, not allowed or denied. */
export function forTool(said: Outcome, tool: string): Outcome {
  if (tool !== 'AskUserQuestion') return said;
  return { ...said, text: said.text.replace(/^Allowed/, 'Answered').replace(/^Denied/, 'Declined') };
}

/** A `conflict` refusal read as an outcome: "Already answered: allowed by the agent's owner". */
export function alreadyAnswered(message: string): Outcome {
  const how = /already answered:?\s*(.*)$/i.exec(message)?.[1]?.trim();
  return { text: how ? `Already answered: ${how}` : 'Already answered', tone: 'warn' };
}

/** The time left before a request is denied unless answered: "4 min", "35 s", "moments". */
export function timeLeft(expiresAt: number, now: number): string {
  const s = Math.floor((expiresAt - now) / 1000);
  if (s <= 0) return 'moments';
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  return `${h} h ${m % 60} min`;
}
