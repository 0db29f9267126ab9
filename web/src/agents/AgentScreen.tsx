// An agent's view: what it is doing, rendered from each line's structured event (or raw), live,
// with the owner's controls.

import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { navigate } from '../app/route';
import { api } from '../api/client';
import { isLive, formatCost, formatDuration, STATUS } from './render';
import { Row, type OpenSet } from './Row';
import {
  agents,
  control,
  elapsedMs,
  errorMessage,
  holdOutput,
  myUserId,
  now,
  ownerName,
  watch,
  type Agent,
} from './store';
import { VirtualList } from './VirtualList';
import { Approvals } from '../approvals/Approvals';
import './agents.css';

export function StatusBadge({ status }: { status: string }) {
  return <span class={`status status-${status}`}>{STATUS[status]?.word ?? status}</span>;
}

/** "Kill this agent?": a modal question, the safe answer focused. */
function ConfirmKill(props: { task: string; busy: boolean; onKill: () => Promise<unknown>; onClose: () => void }) {
  const { task, busy, onKill, onClose } = props;
  const dialog = useRef<HTMLDialogElement>(null);
  const cancel = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    const d = dialog.current;
    if (d && !d.open) d.showModal?.();
    cancel.current?.focus();
  }, []);
  return (
    <dialog ref={dialog} class="confirm-kill" aria-labelledby="kill-title" aria-describedby="kill-text" onClose={onClose}>
      <h2 id="kill-title">Kill this agent?</h2>
      <p id="kill-text">“{task}” stops at once and cannot be resumed.</p>
      <div class="sheet-actions">
        <button type="button" class="btn" ref={cancel} onClick={() => dialog.current?.close()}>
          Cancel
        </button>
        <button
          type="button"
          class="btn btn-danger"
          disabled={busy}
          onClick={async () => {
            await onKill();
            dialog.current?.close();
          }}
        >
          Kill agent
        </button>
      </div>
    </dialog>
  );
}

function Controls({ agent }: { agent: Agent }) {
  const [confirming, setConfirming] = useState(false);
  const [input, setInput] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const live = isLive(agent.status);
  const act = async (command: 'kill' | 'interrupt' | 'input', data?: string) => {
    setBusy(true);
    setError(null);
    try {
      await control(agent.id, command, data);
      return true;
    } catch (e) {
      setError(errorMessage(e));
      return false;
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="controls">
      <div class="control-buttons">
        <button type="button" class="btn btn-small" disabled={!live || busy} onClick={() => void act('interrupt')}>
          Interrupt
        </button>
        <button type="button" class="btn btn-small btn-danger" disabled={!live || busy} onClick={() => setConfirming(true)}>
          Kill
        </button>
      </div>
      {confirming && (
        <ConfirmKill
          task={agent.task}
          busy={busy}
          onClose={() => setConfirming(false)}
          onKill={() => act('kill')}
        />
      )}
      <form
        class="input-form"
        onSubmit={async (e) => {
          e.preventDefault();
          if (input.trim() && (await act('input', input))) setInput('');
        }}
      >
        <label for="agent-input" class="sr-only">
          Send input to the agent
        </label>
        <input
          id="agent-input"
          type="text"
          autocomplete="off"
          placeholder="Send input to the agent"
          value={input}
          disabled={!live}
          onInput={(e) => setInput(e.currentTarget.value)}
        />
        <button type="submit" class="btn" disabled={!live || busy || !input.trim()}>
          Send input
        </button>
      </form>
      {error && (
        <p class="alert" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}

export function AgentScreen({ id }: { id: string }) {
  const out = useMemo(() => holdOutput(id), [id]);
  const open = useMemo<OpenSet>(() => new Set(), [id]);
  const [raw, setRaw] = useState(false);
  const [missing, setMissing] = useState<string | null>(null);
  const fetched = useRef<string | null>(null);

  useEffect(() => {
    watch(id);
    return () => watch(null);
  }, [id]);

  const agent = agents.value.get(id);
  // An agent not in the list yet (a link opened directly, or a brand-new one): read it.
  useEffect(() => {
    if (agent || fetched.current === id) return;
    fetched.current = id;
    api
      .GET('/api/agent/{id}', { params: { path: { id } } })
      .then(({ data, error }) => {
        if (data) {
          const next = new Map(agents.value);
          if (!next.has(id)) next.set(id, data.agent);
          agents.value = next;
        } else setMissing(errorMessage(error));
      })
      .catch((e) => setMissing(errorMessage(e)));
  }, [id, agent]);

  // Controls only on the member's own agents (absent, not disabled, for others).
  const mine = agent != null && agent.owner === myUserId();

  out.version.value; // re-render as lines arrive
  const lines = out.lines;
  const loading = out.loading.value;
  const at = agent && isLive(agent.status) ? now.value : 0;
  const elapsed = agent ? elapsedMs(agent, at || Date.now()) : null;

  return (
    <section class="agent-screen" aria-labelledby="agent-task">
      <header class="agent-head">
        <h1 id="agent-task" class="agent-task">
          {agent?.task ?? (missing ? 'Agent not found' : 'Loading agent…')}
        </h1>
        {agent && (
          <p class="agent-meta">
            <StatusBadge status={agent.status} />
            <span>
              <span class="sr-only">Owner </span>
              {ownerName(agent.owner)}
            </span>
            <span title="Elapsed">
              <span class="sr-only">Elapsed </span>
              {formatDuration(elapsed)}
            </span>
            <span title="Cost">
              <span class="sr-only">Cost </span>
              {formatCost(agent.costUsd)}
            </span>
            {agent.turns != null && <span>{agent.turns} turns</span>}
          </p>
        )}
        {missing && !agent && (
          <p class="alert" role="alert">
            {missing}
          </p>
        )}
        <div class="agent-actions">
          <button type="button" class="btn btn-small" aria-pressed={raw} onClick={() => setRaw(!raw)}>
            Raw
          </button>
          <button type="button" class="btn btn-small" onClick={() => navigate('/workshop?share=' + encodeURIComponent(id))}>
            Share in chat
          </button>
        </div>
      </header>
      {out.notice.value && <p class="agent-notice">{out.notice.value}</p>}
      <VirtualList
        class="agent-log"
        role="log"
        label="Agent output"
        count={lines.length}
        estimate={raw ? 22 : 44}
        layout={raw ? 'raw' : 'rendered'}
        itemKey={(i) => lines[i]?.seq ?? i}
        rowAttrs={(i) => ({ 'data-seq': lines[i]?.seq ?? -1 })}
        renderRow={(i) => {
          const line = lines[i];
          return line ? <Row line={line} raw={raw} tools={out.tools} open={open} /> : null;
        }}
        empty={<p class="muted log-empty">{loading ? 'Loading output…' : 'No output yet.'}</p>}
      />
      <Approvals agentId={id} />
      {agent && mine && <Controls agent={agent} />}
    </section>
  );
}
