import { describe, expect, it } from 'vitest';
import { ResumeBook, Sequence } from '../src/realtime/resume';

const line = (seq: number) => ({ seq, data: `line ${seq}` });
const seqs = (lines: { seq: number }[]) => lines.map((l) => l.seq);

describe('Sequence', () => {
  it('accepts the next seq, drops duplicates and detects gaps', () => {
    const s = new Sequence();
    expect(s.accept(0)).toBe('new');
    expect(s.accept(1)).toBe('new');
    expect(s.accept(1)).toBe('duplicate');
    expect(s.accept(0)).toBe('duplicate');
    expect(s.accept(3)).toBe('gap');
    expect(s.last).toBe(1);
    expect(s.accept(2)).toBe('new');
    expect(s.accept(3)).toBe('new');
  });

  it('holds lines past a gap until the gap is filled, then releases them in order', () => {
    const s = new Sequence<ReturnType<typeof line>>();
    expect(seqs(s.offer(line(0)))).toEqual([0]);
    // Live lines arrive past a gap (history not fetched yet): nothing shows.
    expect(s.offer(line(4))).toEqual([]);
    expect(s.offer(line(5))).toEqual([]);
    expect(s.offer(line(4))).toEqual([]); // a duplicate while waiting
    expect(s.gap()).toEqual({ from: 1, to: 3 });
    // History fills the gap: every line once, in order.
    expect(seqs(s.offerAll([1, 2, 3, 4].map(line)))).toEqual([1, 2, 3, 4, 5]);
    expect(s.gap()).toBeNull();
    expect(s.last).toBe(5);
    expect(s.offerAll([3, 4, 5].map(line))).toEqual([]);
  });

  it('a view opened mid-stream shows history first, then the live lines that came meanwhile', () => {
    const s = new Sequence<ReturnType<typeof line>>();
    const shown: number[] = [];
    for (const l of [7, 8].map(line)) shown.push(...seqs(s.offer(l)));
    expect(s.gap()).toEqual({ from: 0, to: 6 });
    shown.push(...seqs(s.offerAll([0, 1, 2, 3].map(line))));
    shown.push(...seqs(s.offer(line(9))));
    shown.push(...seqs(s.offerAll([4, 5, 6, 7, 8, 9].map(line))));
    expect(shown).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('skips what history no longer has, releasing what waited past it', () => {
    const s = new Sequence<ReturnType<typeof line>>();
    s.offer(line(0));
    s.offer(line(12));
    expect(seqs(s.skipTo(10))).toEqual([]);
    expect(s.last).toBe(9);
    expect(seqs(s.offer(line(10)))).toEqual([10]);
    expect(seqs(s.offer(line(11)))).toEqual([11, 12]);
    expect(seqs(s.skipTo(5))).toEqual([]); // never backwards
    expect(s.last).toBe(12);
  });
});

describe('ResumeBook', () => {
  it('gives the since-map of the agents held, with what they hold', () => {
    const book = new ResumeBook<ReturnType<typeof line>>();
    expect(book.since()).toEqual({});
    const a = book.hold('a');
    book.hold('b'); // nothing yet: its history comes over REST, not as a replay
    a.offerAll([0, 1, 2].map(line));
    expect(book.since()).toEqual({ a: 2 });
    expect(book.accept('a', 3)).toBe('new');
    expect(book.accept('a', 3)).toBe('duplicate');
    expect(book.accept('b', 0)).toBe('new');
    expect(book.since()).toEqual({ a: 3, b: 0 });
    expect(book.hold('a')).toBe(a); // holding again keeps what is held
    book.release('a');
    expect(book.since()).toEqual({ b: 0 });
    expect(book.accept('a', 4)).toBe('duplicate'); // not held: ignored
    expect(book.agents()).toEqual(['b']);
  });

  it('after a reconnect the replay from since continues without gap or duplicate', () => {
    const book = new ResumeBook<ReturnType<typeof line>>();
    const a = book.hold('a');
    const shown: number[] = [];
    const take = (seq: number) => shown.push(...seqs(a.offer(line(seq))));
    [0, 1, 2, 3].forEach(take);
    // Offline; the server goes on to 9. The rejoin says since {a: 3}: the replay sends 4..9,
    // and a live line may overlap the replay's end.
    const since = book.since();
    expect(since).toEqual({ a: 3 });
    for (let seq = since.a! + 1; seq <= 9; seq++) take(seq);
    [9, 10].forEach(take);
    expect(shown).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });
});
