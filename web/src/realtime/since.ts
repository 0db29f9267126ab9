/**
 * Merges the since-maps of every feature that holds agent output into the one `join_team`
 * carries. When two hold the same agent the lower seq wins: the replay then covers both, and the
 * one that was further along drops what it already has (a gap would be worse than a duplicate).
 */
export function mergeSince(maps: Iterable<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const map of maps) {
    for (const [agentId, seq] of Object.entries(map)) {
      if (!Number.isSafeInteger(seq) || seq < 0) continue;
      const held = out[agentId];
      out[agentId] = held === undefined ? seq : Math.min(held, seq);
    }
  }
  return out;
}
