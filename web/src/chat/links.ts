// Links in chat text, pure: agent links (`/agents/<id>`, bare or as a URL of this app) and other
// http(s) URLs. The text is never parsed as HTML: the view renders these pieces as elements.

export type Piece =
  | { kind: 'text'; text: string }
  | { kind: 'agent'; id: string; text: string }
  | { kind: 'url'; href: string; text: string };

const LINK = /\bhttps?:\/\/[^\s<>"'`]+|(?<![\w/.:-])\/agents\/[A-Za-z0-9_-]+/g;
const AGENT_PATH = /^\/agents\/([A-Za-z0-9_-]+)\/?$/;
/** Punctuation that ends a sentence rather than a URL. */
const TRAILING = '.,;:!?\'")]}>';

/** A URL without the punctuation after it; a `)` closing a `(` of the URL stays. */
function trimTrailing(raw: string): string {
  let end = raw.length;
  while (end > 0) {
    const c = raw[end - 1] ?? '';
    if (!TRAILING.includes(c)) break;
    if (c === ')') {
      const head = raw.slice(0, end);
      if ((head.match(/\)/g) ?? []).length <= (head.match(/\(/g) ?? []).length) break;
    }
    end--;
  }
  return raw.slice(0, end);
}

/** Splits a message into text, agent links (of the app at `origin`) and external links. */
export function parseLinks(text: string, origin: string): Piece[] {
  const out: Piece[] = [];
  let at = 0;
  for (const match of text.matchAll(LINK)) {
    const raw = trimTrailing(match[0]);
    const start = match.index ?? 0;
    if (!raw) continue;
    const piece = classify(raw, origin);
    if (!piece) continue;
    if (start > at) push(out, { kind: 'text', text: text.slice(at, start) });
    out.push(piece);
    at = start + raw.length;
  }
  if (at < text.length) push(out, { kind: 'text', text: text.slice(at) });
  return out;
}

function classify(raw: string, origin: string): Piece | null {
  if (raw.startsWith('/')) {
    const id = AGENT_PATH.exec(raw)?.[1];
    return id ? { kind: 'agent', id, text: raw } : null;
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return null;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  const id = url.origin === origin ? AGENT_PATH.exec(url.pathname)?.[1] : undefined;
  if (id) return { kind: 'agent', id, text: raw };
  return { kind: 'url', href: url.href, text: raw };
}

function push(out: Piece[], piece: Piece) {
  const last = out[out.length - 1];
  if (piece.kind === 'text' && last?.kind === 'text') last.text += piece.text;
  else out.push(piece);
}

/** The message that shares an agent in chat. */
export function shareText(agentId: string, origin: string): string {
  return `Look at this agent: ${origin}/agents/${encodeURIComponent(agentId)}`;
}
