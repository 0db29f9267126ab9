// The Command Deck: every agent of the team at a glance, newest first, live.

import { useState } from 'preact/hooks';
import { followLink } from '../app/route';
import { StatusBadge } from './AgentScreen';
import { formatCost, formatDuration, isLive } from './render';
import { SpawnSheet } from './SpawnSheet';
import { DeckApprovals } from '../approvals/Approvals';
import { agents, agentsLoaded, dismiss, elapsedMs, myUserId, notifications, now, ownerName, type Agent } from './store';
import './agents.css';

function AgentItem({ agent, at }: { agent: Agent; at: number }) {
  const mine = agent.owner === myUserId();
  return (
    <li class="deck-item" data-agent-id={agent.id} data-status={agent.status}>
      <a href={`/agents/${agent.id}`} class="deck-link" onClick={followLink}>
        <span class="deck-task">{agent.task}</span>
      </a>
      <div class="deck-meta">
        <StatusBadge status={agent.status} />
        <span class="deck-owner">{mine ? `${ownerName(agent.owner)} (you)` : ownerName(agent.owner)}</span>
        <span class="deck-elapsed" title="Elapsed">
          <span class="sr-only">Elapsed </span>
          {formatDuration(elapsedMs(agent, at))}
        </span>
        <span class="deck-cost" title="Cost">
          <span class="sr-only">Cost </span>
          {formatCost(agent.costUsd)}
        </span>
      </div>
    </li>
  );
}

export function Deck() {
  const [sheet, setSheet] = useState(false);
  const list = [...agents.value.values()].sort((a, b) => b.createdAt - a.createdAt);
  const at = list.some((a) => isLive(a.status)) ? now.value : Date.now();
  const running = list.filter((a) => isLive(a.status)).length;
  return (
    <section class="screen deck" aria-labelledby="deck-title">
      <div class="deck-head">
        <h1 id="deck-title">Command Deck</h1>
        <button type="button" class="btn btn-primary" onClick={() => setSheet(true)}>
          New agent
        </button>
      </div>
      <p class="deck-summary muted">
        {list.length === 0
          ? agentsLoaded.value
            ? 'No agents yet. Start one with “New agent”.'
            : 'Loading agents…'
          : `${list.length} agent${list.length === 1 ? '' : 's'}, ${running} running`}
      </p>
      <DeckApprovals />
      <div class="notes" role="status" aria-label="Notifications">
        {notifications.value.map((n) => (
          <div key={n.id} class={`note note-${n.tone}`}>
            <a href={`/agents/${n.agentId}`} onClick={followLink}>
              {n.text}
            </a>
            <button type="button" class="btn btn-ghost btn-small note-close" aria-label="Dismiss" onClick={() => dismiss(n.id)}>
              ×
            </button>
          </div>
        ))}
      </div>
      <ul class="deck-list" aria-label="Agents">
        {list.map((a) => (
          <AgentItem key={a.id} agent={a} at={at} />
        ))}
      </ul>
      {sheet && <SpawnSheet onClose={() => setSheet(false)} />}
    </section>
  );
}
