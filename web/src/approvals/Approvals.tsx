// Tool requests on screen: a card per waiting request on the agent's view (the owner's with
// Allow, Deny and Always; a teammate's saying whose answer it waits for), the Command Deck's
// notifications of the agents waiting on this member, and the count on the deck's tab.

import { useEffect, useState } from 'preact/hooks';
import { agents, errorMessage, ownerName } from '../agents/store';
import { Diff } from '../agents/Diff';
import { followLink } from '../app/route';
import { answer, answering, decidedOn, keyOf, mine, waitingOn, type Waiting } from './store';
import { action, answeredInput, shortSummary, shown, timeLeft } from './summary';
import type { Answer, Choice, Question } from './summary';
import './approvals.css';

/** The time now, ticking once a second while `on`. */
function useClock(on: boolean): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!on) return;
    setNow(Date.now());
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, [on]);
  return now;
}

/** What the tool would do, in full enough to decide on. */
function Detail({ request }: { request: Waiting }) {
  const s = shown(request);
  switch (s.kind) {
    case 'command':
      return (
        <>
          {s.description && s.description !== action(request.tool) && <p class="approval-desc">{s.description}</p>}
          <pre class="approval-command" aria-label="Command">
            <span class="approval-prompt" aria-hidden="true">
              ${' '}
            </span>
            {s.command}
          </pre>
        </>
      );
    case 'edit':
      return s.edits.length ? (
        <div class="approval-diff">
          {s.edits.map((edit, i) => (
            <Diff key={i} edit={edit} />
          ))}
        </div>
      ) : (
        <pre class="approval-command">{s.path}</pre>
      );
    case 'ask':
      return null; // the owner answers with QuestionForm; a teammate sees the one-line summary
    case 'other':
      return (
        <>
          <p class="approval-desc">{s.text}</p>
          {s.input && <pre class="approval-command">{s.input}</pre>}
        </>
      );
  }
}

/** One question: its options as toggles (one, or several with `multiSelect`), and own words. */
function QuestionField({
  q,
  index,
  choice,
  onChange,
  disabled,
}: {
  q: Question;
  index: number;
  choice: Choice;
  onChange: (c: Choice) => void;
  disabled: boolean;
}) {
  const pick = (label: string) => {
    const on = choice.labels.includes(label);
    const labels = q.multiSelect ? (on ? choice.labels.filter((l) => l !== label) : [...choice.labels, label]) : on ? [] : [label];
    // One choice of a single-select question replaces the own words.
    onChange({ labels, other: q.multiSelect || !labels.length ? choice.other : '' });
  };
  const groupId = `q-${index}`;
  return (
    <fieldset class="approval-question" disabled={disabled}>
      <legend class="approval-q-text" id={groupId}>
        {q.header && <span class="approval-q-header">{q.header}</span>}
        {q.question}
      </legend>
      <div class="approval-choices" role="group" aria-labelledby={groupId}>
        {q.options.map((o) => (
          <button
            key={o.label}
            type="button"
            class="approval-choice"
            aria-pressed={choice.labels.includes(o.label) ? 'true' : 'false'}
            onClick={() => pick(o.label)}
          >
            <strong>{o.label}</strong>
            {o.description && <span class="approval-choice-desc">{o.description}</span>}
          </button>
        ))}
      </div>
      <label class="approval-other">
        <span>{q.options.length ? 'Or in your words' : 'Your answer'}</span>
        <input
          type="text"
          maxLength={2000}
          value={choice.other}
          onInput={(e) => {
            const other = (e.target as HTMLInputElement).value;
            onChange({ labels: q.multiSelect || !other.trim() ? choice.labels : [], other });
          }}
        />
      </label>
    </fieldset>
  );
}

/** The owner's answer to a question: a choice per question, sent as the allow's input. */
function QuestionForm({ request, questions, onAnswer, sending }: {
  request: Waiting;
  questions: Question[];
  onAnswer: (decision: Answer, input?: Record<string, unknown>) => void;
  sending: Answer | undefined;
}) {
  const [choices, setChoices] = useState<Choice[]>(() => questions.map(() => ({ labels: [], other: '' })));
  const input = answeredInput(request.input, choices);
  const plural = questions.length > 1;
  return (
    <form
      class="approval-ask"
      onSubmit={(e) => {
        e.preventDefault();
        if (input) onAnswer('allow', input);
      }}
    >
      {questions.map((q, i) => (
        <QuestionField
          key={i}
          q={q}
          index={i}
          choice={choices[i] ?? { labels: [], other: '' }}
          disabled={!!sending}
          onChange={(c) => setChoices(choices.map((old, j) => (j === i ? c : old)))}
        />
      ))}
      <div class="approval-buttons" aria-busy={sending ? 'true' : undefined}>
        <button type="button" class="btn btn-danger" disabled={!!sending} onClick={() => onAnswer('deny')}>
          {sending === 'deny' ? 'Declining…' : 'Decline'}
        </button>
        <button type="submit" class="btn btn-primary" disabled={!!sending || !input}>
          {sending === 'allow' ? 'Sending…' : plural ? 'Send answers' : 'Send answer'}
        </button>
      </div>
    </form>
  );
}

/** The owner's card: what the agent wants to do, and the three answers. */
function OwnerCard({ request, now }: { request: Waiting; now: number }) {
  const key = keyOf(request.agentId, request.requestId);
  const sending = answering.value.get(key);
  const [error, setError] = useState<string | null>(null);
  const titleId = `approval-${request.requestId}`;
  const reply = async (decision: Answer, input?: Record<string, unknown>) => {
    setError(null);
    try {
      await answer(request, decision, undefined, input);
    } catch (e) {
      setError(errorMessage(e));
    }
  };
  const s = shown(request);
  return (
    <article class="approval" aria-labelledby={titleId} data-testid="approval-card" data-request-id={request.requestId}>
      <div class="approval-head">
        <span class="approval-kicker">{s.kind === 'ask' ? 'Needs your answer' : 'Needs your approval'}</span>
        {request.expiresAt > 0 && (
          <span class="approval-timer">
            <span class="sr-only">Denied automatically in </span>
            <span aria-hidden="true">Auto-deny in </span>
            {timeLeft(request.expiresAt, now)}
          </span>
        )}
      </div>
      <h2 id={titleId} class="approval-title">
        <span class="approval-tool">{request.tool}</span> {action(request.tool)}
      </h2>
      {s.kind === 'ask' ? (
        <QuestionForm request={request} questions={s.questions} onAnswer={(d, input) => void reply(d, input)} sending={sending} />
      ) : (
        <>
          <Detail request={request} />
          <div class="approval-buttons" aria-busy={sending ? 'true' : undefined}>
            <button type="button" class="btn btn-danger" disabled={!!sending} onClick={() => void reply('deny')}>
              {sending === 'deny' ? 'Denying…' : 'Deny'}
            </button>
            <button type="button" class="btn btn-primary" disabled={!!sending} onClick={() => void reply('allow')}>
              {sending === 'allow' ? 'Allowing…' : 'Allow'}
            </button>
            <button
              type="button"
              class="btn approval-always"
              disabled={!!sending}
              title={`Allow, and allow this agent's later ${request.tool} uses without asking`}
              onClick={() => void reply('allow_always_for_agent')}
            >
              {sending === 'allow_always_for_agent' ? 'Allowing…' : 'Always for this agent'}
            </button>
          </div>
        </>
      )}
      {error && (
        <p class="alert" role="alert">
          {error}
        </p>
      )}
    </article>
  );
}

/** A teammate's card: the agent waits on its owner, and on what. */
function WatchCard({ request, now }: { request: Waiting; now: number }) {
  const owner = ownerName(request.owner);
  return (
    <article class="approval approval-watch" data-testid="approval-waiting" data-request-id={request.requestId}>
      <p class="approval-line">
        <span class="approval-dot" aria-hidden="true" />
        <span>
          Waiting for {owner}’s {request.tool === 'AskUserQuestion' ? 'answer' : 'approval'}: <span class="approval-tool">{request.tool}</span>{' '}
          <code class="approval-summary">{shortSummary(request)}</code>
        </span>
      </p>
      {request.expiresAt > 0 && (
        <p class="approval-timer">Denied automatically in {timeLeft(request.expiresAt, now)} unless {owner} answers.</p>
      )}
    </article>
  );
}

/** The agent view's cards: one per waiting request, then what became of those just decided. */
export function Approvals({ agentId }: { agentId: string }) {
  const list = waitingOn(agentId);
  const done = decidedOn(agentId);
  const now = useClock(list.length > 0);
  return (
    <div class={list.length || done.length ? 'approvals' : 'approvals is-empty'}>
      {list.length > 0 && (
        <section class="approval-list" aria-label="Tool requests">
          {list.map((r) =>
            r.canAnswer ? <OwnerCard key={r.requestId} request={r} now={now} /> : <WatchCard key={r.requestId} request={r} now={now} />,
          )}
        </section>
      )}
      {/* Always in the page, so that an outcome appearing in it is announced. */}
      <div class="approval-outcomes" role="status">
        {done.map((d) => (
          <p key={d.key} class={`approval-outcome tone-${d.tone}`} data-testid="approval-outcome">
            <span class="approval-tool">{d.request.tool}</span> <code class="approval-summary">{shortSummary(d.request, 80)}</code>
            <span class="approval-outcome-text">{d.text}</span>
          </p>
        ))}
      </div>
    </div>
  );
}

/** The Command Deck's notifications: each agent waiting on this member, opening it. */
export function DeckApprovals() {
  const byAgent = new Map<string, Waiting[]>();
  for (const r of mine.value) byAgent.set(r.agentId, [...(byAgent.get(r.agentId) ?? []), r]);
  if (!byAgent.size) return null;
  return (
    <ul class="approval-notes" aria-label="Waiting for your approval">
      {[...byAgent].map(([agentId, requests]) => {
        const first = requests[0]!;
        const task = agents.value.get(agentId)?.task ?? 'Your agent';
        const more = requests.length > 1 ? ` (+${requests.length - 1} more)` : '';
        return (
          <li key={agentId} data-agent-id={agentId}>
            <a class="approval-note" href={`/agents/${agentId}`} onClick={followLink}>
              <span class="approval-note-kicker">
                Needs your approval{more}
              </span>
              <span class="approval-note-task">{task}</span>
              <span class="approval-note-what">
                <span class="approval-tool">{first.tool}</span> <code class="approval-summary">{shortSummary(first, 100)}</code>
              </span>
            </a>
          </li>
        );
      })}
    </ul>
  );
}

/** How many requests wait on this member (the Command Deck tab's badge). */
export function approvalCount(): number {
  return mine.value.length;
}
