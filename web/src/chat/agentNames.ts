// The task of an agent named by id (presence "watching", chat links): from the deck's list when
// it has the agent, else asked once from the API.

import { signal } from '@preact/signals';
import { agents } from '../agents/store';
import { api } from '../api/client';

const fetched = signal<ReadonlyMap<string, string>>(new Map());
const asked = new Set<string>();
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function agentTask(id: string): string | null {
  const known = agents.value.get(id)?.task ?? fetched.value.get(id);
  if (known !== undefined) return known;
  // Agent ids are UUIDs: anything else is not asked about.
  if (!asked.has(id) && UUID.test(id)) {
    asked.add(id);
    void api
      .GET('/api/agent/{id}', { params: { path: { id } } })
      .then(({ data }) => {
        // Not found stays asked: it will not be found a second time either.
        if (data) fetched.value = new Map(fetched.value).set(id, data.agent.task);
      })
      .catch(() => asked.delete(id));
  }
  return null;
}
