import { describe, expect, it } from 'vitest';
import { mergeSince } from '../src/realtime/since';

describe('mergeSince', () => {
  it('is empty with no providers', () => {
    expect(mergeSince([])).toEqual({});
  });

  it('puts together the agents of every provider', () => {
    expect(mergeSince([{ a: 3 }, { b: 7 }])).toEqual({ a: 3, b: 7 });
  });

  it('takes the lower seq when two hold the same agent (a duplicate, never a gap)', () => {
    expect(mergeSince([{ a: 9 }, { a: 4 }, { a: 6 }])).toEqual({ a: 4 });
  });

  it('keeps seq 0 and ignores what is not a seq', () => {
    expect(mergeSince([{ a: 0, b: -1, c: Number.NaN, d: 1.5 }])).toEqual({ a: 0 });
  });
});
