// Resume bookkeeping for agent output, pure (no network, no DOM): per agent the client holds,
// the highest contiguous seq it has. A line is new (the next one), a duplicate (held already) or
// past a gap (lines before it are missing: they are fetched from history before it is shown).
// The since-map is what `join_team {since}` sends after a reconnect, so the gateway replays
// exactly what was missed.

export type Verdict = 'new' | 'duplicate' | 'gap';

/** One agent's lines in seq order: what is held, and what waits for a gap to be filled. */
export class Sequence<T extends { seq: number }> {
  /** The highest seq held with every seq before it (from `first`): -1 when none. */
  last: number;
  /** Lines past a gap, by seq, until the gap is filled. */
  private waiting = new Map<number, T>();

  constructor(last = -1) {
    this.last = last;
  }

  /** Classifies a seq; `new` records it as held. */
  accept(seq: number): Verdict {
    if (seq <= this.last) return 'duplicate';
    if (seq > this.last + 1) return 'gap';
    this.last = seq;
    return 'new';
  }

  /**
   * Offers a line: returns the lines that may now be shown, in order (the line itself and any
   * that waited for it); a line past a gap waits, a duplicate is dropped.
   */
  offer(line: T): T[] {
    const verdict = this.accept(line.seq);
    if (verdict === 'duplicate') return [];
    if (verdict === 'gap') {
      this.waiting.set(line.seq, line);
      return [];
    }
    const out = [line];
    let next: T | undefined;
    while ((next = this.waiting.get(this.last + 1)) !== undefined) {
      this.waiting.delete(next.seq);
      this.last = next.seq;
      out.push(next);
    }
    return out;
  }

  /** `offer` for many lines (a page of history). */
  offerAll(lines: Iterable<T>): T[] {
    const out: T[] = [];
    for (const line of lines) for (const l of this.offer(line)) out.push(l);
    return out;
  }

  /** The missing range before the first waiting line (`to` inclusive), if any. */
  gap(): { from: number; to: number } | null {
    if (this.waiting.size === 0) return null;
    let min = Infinity;
    for (const seq of this.waiting.keys()) if (seq < min) min = seq;
    return { from: this.last + 1, to: min - 1 };
  }

  /** Lines before `seq` are gone for good (history lost): holding resumes at `seq`. */
  skipTo(seq: number): T[] {
    if (seq - 1 <= this.last) return [];
    this.last = seq - 1;
    for (const s of this.waiting.keys()) if (s <= this.last) this.waiting.delete(s);
    const out: T[] = [];
    let next: T | undefined;
    while ((next = this.waiting.get(this.last + 1)) !== undefined) {
      this.waiting.delete(next.seq);
      this.last = next.seq;
      out.push(next);
    }
    return out;
  }
}

/** The agents the client holds output of, each with its sequence. */
export class ResumeBook<T extends { seq: number }> {
  private held = new Map<string, Sequence<T>>();

  hold(agentId: string): Sequence<T> {
    let seq = this.held.get(agentId);
    if (!seq) {
      seq = new Sequence<T>();
      this.held.set(agentId, seq);
    }
    return seq;
  }

  get(agentId: string): Sequence<T> | undefined {
    return this.held.get(agentId);
  }

  release(agentId: string): void {
    this.held.delete(agentId);
  }

  agents(): string[] {
    return [...this.held.keys()];
  }

  /** Classifies a line of an agent; a line of an agent not held is a duplicate (ignored). */
  accept(agentId: string, seq: number): Verdict {
    return this.held.get(agentId)?.accept(seq) ?? 'duplicate';
  }

  /**
   * Per held agent, the last seq held: what `join_team {since}` carries. Agents with nothing
   * held yet are left out (their history comes over REST, not as a replay of everything).
   */
  since(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [id, seq] of this.held) if (seq.last >= 0) out[id] = seq.last;
    return out;
  }
}
