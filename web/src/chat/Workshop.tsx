// The Workshop: team chat (history, live, optimistic sends) and who is here, what they watch.

import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import type { PresenceName, PresenceUser } from '../api/types';
import { session } from '../api/session';
import { clock, dateTime, dayLabel, initials, sameDay } from '../app/format';
import { followLink, route } from '../app/route';
import { agentTask } from './agentNames';
import { parseLinks, shareText } from './links';
import type { ChatRow } from './list';
import {
  discard,
  hasMore,
  historyError,
  loadOlder,
  loaded,
  loadingOlder,
  myStatus,
  presence,
  retry,
  rows,
  send,
  setMyStatus,
  workshopShown,
} from './store';
import { errorMessage } from '../api/client';

export function Workshop() {
  useEffect(() => {
    workshopShown(true);
    return () => workshopShown(false);
  }, []);
  return (
    <div class="workshop">
      <PresenceBar />
      <ChatLog />
      <Composer />
    </div>
  );
}

// Presence

const RANK: Record<PresenceName, number> = { online: 0, busy: 1, away: 2, offline: 3 };

function PresenceBar() {
  const me = session.value?.user.id;
  const users = [...presence.value].sort(
    (a, b) => RANK[a.status] - RANK[b.status] || a.displayName.localeCompare(b.displayName),
  );
  const [error, setError] = useState<string | null>(null);
  const change = (status: PresenceName) => {
    setError(null);
    setMyStatus(status).catch((err: unknown) => setError(errorMessage(err)));
  };
  return (
    <section class="presence-bar" aria-labelledby="workshop-title">
      <div class="presence-head">
        <h1 id="workshop-title">Workshop</h1>
        <div class="my-status">
          <label for="my-status">My status</label>
          <select
            id="my-status"
            value={myStatus.value}
            onChange={(e) => change((e.currentTarget as HTMLSelectElement).value as PresenceName)}
          >
            <option value="online">online</option>
            <option value="away">away</option>
            <option value="busy">busy</option>
          </select>
        </div>
      </div>
      {error && (
        <p role="alert" class="alert">
          {error}
        </p>
      )}
      <ul class="presence-list" aria-label="Team presence" tabIndex={0}>
        {users.map((u) => (
          <PresenceItem key={u.userId} user={u} me={u.userId === me} />
        ))}
        {users.length === 0 && <li class="muted">Nobody here yet</li>}
      </ul>
    </section>
  );
}

function PresenceItem({ user, me }: { user: PresenceUser; me: boolean }) {
  const watching = (user.watching ?? []).map((id) => agentTask(id) ?? id);
  const watchText = watching.length ? `watching ${watching.join(', ')}` : '';
  return (
    <li data-user-id={user.userId} title={watchText || undefined}>
      <span class="dot" data-presence={user.status} aria-hidden="true" />
      <span class="who">
        <span class="name">
          {user.displayName}
          {me && <span class="muted"> (you)</span>}
        </span>
        <span class="state">
          {user.status}
          {watchText && <span class="watching"> · {watchText}</span>}
        </span>
      </span>
    </li>
  );
}

// The log

function ChatLog() {
  const log = useRef<HTMLDivElement>(null);
  /** The member is at the bottom: new messages keep it there. */
  const stick = useRef(true);
  /** Where the first message was before older ones were added above it. */
  const anchor = useRef<{ key: string; top: number } | null>(null);
  const list = rows.value;

  const older = () => {
    const el = log.current;
    void loadOlder(() => {
      const first = el?.querySelector<HTMLElement>('[data-key]');
      anchor.current = first ? { key: first.dataset.key ?? '', top: first.getBoundingClientRect().top } : null;
    });
  };

  useLayoutEffect(() => {
    const el = log.current;
    if (!el) return;
    const held = anchor.current;
    if (held) {
      anchor.current = null;
      const same = el.querySelector<HTMLElement>(`[data-key="${CSS.escape(held.key)}"]`);
      if (same) el.scrollTop += same.getBoundingClientRect().top - held.top;
      return;
    }
    const last = list[list.length - 1];
    if (stick.current || (last && last.state !== 'sent')) el.scrollTop = el.scrollHeight;
  }, [list]);

  // A short first page leaves nothing to scroll: fetch older until the log can scroll.
  useEffect(() => {
    const el = log.current;
    if (el && loaded.value && hasMore.value && !loadingOlder.value && !historyError.value && el.scrollHeight <= el.clientHeight) {
      older();
    }
  });

  const onScroll = () => {
    const el = log.current;
    if (!el) return;
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
    if (el.scrollTop < 240 && hasMore.value && !loadingOlder.value) older();
  };

  const me = session.value?.user.id;
  return (
    <div class="chat-log" role="log" aria-label="Team chat" tabIndex={0} ref={log} onScroll={onScroll}>
      {hasMore.value && (
        <div class="chat-older">
          {loadingOlder.value ? (
            <span aria-busy="true">Loading older messages…</span>
          ) : (
            <button type="button" class="btn btn-ghost btn-small" onClick={older}>
              Load older messages
            </button>
          )}
        </div>
      )}
      {historyError.value && (
        <p class="alert" role="alert">
          {historyError.value}
        </p>
      )}
      {!loaded.value && !historyError.value && <p class="loading">Loading the chat…</p>}
      {loaded.value && list.length === 0 && (
        <p class="empty">No messages yet. Say hello to the team, or share an agent from its screen.</p>
      )}
      {list.map((row, i) => {
        const prev = list[i - 1];
        const newDay = !prev || !sameDay(prev.timestamp, row.timestamp);
        const first = newDay || !prev || prev.userId !== row.userId || row.timestamp - prev.timestamp > 5 * 60_000;
        return (
          <MessageRow key={row.key} row={row} first={first} newDay={newDay} mine={row.userId === me} />
        );
      })}
    </div>
  );
}

function MessageRow({ row, first, newDay, mine }: { row: ChatRow; first: boolean; newDay: boolean; mine: boolean }) {
  return (
    <>
      {newDay && (
        <p class="day-sep">
          {dayLabel(row.timestamp)}
        </p>
      )}
      <div
        class={`msg${first ? ' first' : ''}${mine ? ' mine' : ''}`}
        data-key={row.key}
        data-message-id={row.id ?? ''}
        data-client-id={row.clientId ?? undefined}
        data-state={row.state}
      >
        <span class="avatar" aria-hidden="true">
          {initials(row.displayName)}
        </span>
        {first ? (
          <p class="msg-head">
            <span class="author">{row.displayName}</span>
            <time dateTime={new Date(row.timestamp).toISOString()} title={dateTime(row.timestamp)}>
              {clock(row.timestamp)}
            </time>
          </p>
        ) : null}
        <p class="msg-text">
          {!first && <span class="sr-only">{row.displayName}: </span>}
          <MessageText text={row.message} />
        </p>
        {row.state !== 'sent' && <SendState row={row} />}
      </div>
    </>
  );
}

function SendState({ row }: { row: ChatRow }) {
  const id = row.clientId ?? '';
  if (row.state === 'sending') return <p class="msg-state">Sending…</p>;
  if (row.state === 'waiting') return <p class="msg-state">Not sent yet: sending when the connection is back</p>;
  return (
    <p class="msg-state">
      <span>Not sent: {row.error}</span>
      <button type="button" class="btn btn-small" onClick={() => retry(id)}>
        Retry
      </button>
      <button type="button" class="btn btn-ghost btn-small" onClick={() => discard(id)}>
        Discard
      </button>
    </p>
  );
}

/** The message as plain text, with agent links (in-app) and web links as links. */
function MessageText({ text }: { text: string }) {
  const pieces = parseLinks(text, location.origin);
  return (
    <>
      {pieces.map((p, i) => {
        if (p.kind === 'text') return p.text;
        if (p.kind === 'agent') {
          const task = agentTask(p.id);
          return (
            <a key={i} href={`/agents/${encodeURIComponent(p.id)}`} onClick={followLink} title={task ?? undefined}>
              {task ? `agent “${task}”` : p.text}
            </a>
          );
        }
        return (
          <a key={i} href={p.href} target="_blank" rel="noopener noreferrer nofollow">
            {p.text}
          </a>
        );
      })}
    </>
  );
}

// Writing

function Composer() {
  const input = useRef<HTMLTextAreaElement>(null);
  const share = route.value.params.get('share');
  const [text, setText] = useState(() => (share ? shareText(share, location.origin) : ''));

  useEffect(() => {
    if (!share) return;
    setText(shareText(share, location.origin));
    const el = input.current;
    if (el) {
      el.focus();
      el.setSelectionRange(el.value.length, el.value.length);
    }
  }, [share]);

  useLayoutEffect(() => {
    const el = input.current;
    if (!el) return;
    el.style.height = 'auto';
    el.style.height = `${Math.min(el.scrollHeight + 2, 160)}px`;
  }, [text]);

  const submit = (e?: Event) => {
    e?.preventDefault();
    if (!text.trim()) return;
    send(text);
    setText('');
    input.current?.focus();
  };

  return (
    <form class="composer" onSubmit={submit}>
      <label for="chat-message" class="sr-only">
        Message
      </label>
      <textarea
        id="chat-message"
        ref={input}
        rows={1}
        placeholder="Message the team"
        value={text}
        enterkeyhint="send"
        onInput={(e) => setText((e.currentTarget as HTMLTextAreaElement).value)}
        onKeyDown={(e) => {
          if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) submit(e);
        }}
      />
      <button type="submit" class="btn btn-primary">
        Send
      </button>
    </form>
  );
}
