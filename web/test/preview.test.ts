import { describe, expect, it } from 'vitest';
import { frameable, fromView, isEmpty, newer, parsePreview, shortCommit, statusOf, type Preview } from '../src/preview/current';

const event = (extra: Record<string, unknown> = {}) => ({
  url: 'https://preview.example.com',
  commit: 'abcdef1234567890',
  status: 'live',
  ref: 'refs/heads/main',
  repository: 'acme/shop',
  at: 2_000,
  ...extra,
});

describe('the current preview', () => {
  it('reads events and API answers into one shape', () => {
    expect(parsePreview(event())).toEqual({
      url: 'https://preview.example.com',
      commit: 'abcdef1234567890',
      status: 'live',
      ref: 'refs/heads/main',
      repository: 'acme/shop',
      at: 2_000,
    });
    // Junk fields become empty, not crashes; a payload that is not an object is refused.
    expect(parsePreview({ url: 7, status: null })).toEqual({ url: '', commit: '', status: '', ref: undefined, repository: undefined, at: undefined });
    expect(parsePreview('live')).toBeNull();
    expect(parsePreview({ ...event(), at: undefined, updatedAt: 5 })?.at).toBe(5);
    expect(fromView({ url: '', commit: '', status: 'none', updatedAt: 0 })).toEqual({ url: '', commit: '', status: 'none', at: 0 });
  });

  it('keeps a live event that overtook a slower GET, and takes anything later', () => {
    const live = parsePreview(event({ at: 3_000 })) as Preview;
    const stale = fromView({ url: 'https://old.example.com', commit: '0000000aaaa', status: 'deploying', updatedAt: 1_000 });
    // The GET was answered before the push landed, but arrived after its event.
    expect(newer(live, stale)).toBe(live);
    // A later answer wins, and so does the first copy of anything.
    const later = fromView({ url: 'https://new.example.com', commit: 'fffffff0000', status: 'pending', updatedAt: 4_000 });
    expect(newer(live, later)).toEqual(later);
    expect(newer(null, stale)).toBe(stale);
    // "Never" is a time too: a push seen live beats an answer from before the first push.
    expect(newer(live, fromView({ url: '', commit: '', status: 'none', updatedAt: 0 }))).toBe(live);
    // An event that carries no time is the latest thing known.
    const untimed = parsePreview(event({ at: undefined, status: 'failed' })) as Preview;
    expect(newer(live, untimed).status).toBe('failed');
  });

  it("keeps an event's branch and repository when the API answers about the same commit", () => {
    const live = parsePreview(event({ status: 'deploying', at: 2_000 })) as Preview;
    const same = fromView({ url: 'https://preview.example.com', commit: 'abcdef1234567890', status: 'live', updatedAt: 2_500 });
    expect(newer(live, same)).toEqual({ ...same, ref: 'refs/heads/main', repository: 'acme/shop' });
    const other = fromView({ url: 'https://preview.example.com', commit: '1234567', status: 'live', updatedAt: 2_500 });
    expect(newer(live, other)).toEqual(other);
  });

  it('says what the status means and what can be framed', () => {
    expect(statusOf('live')).toEqual({ label: 'live', tone: 'ok' });
    expect(statusOf('pending').tone).toBe('busy');
    expect(statusOf('deploying').tone).toBe('busy');
    expect(statusOf('failed').tone).toBe('bad');
    expect(statusOf('none').label).toBe('nothing pushed yet');
    expect(statusOf('paused')).toEqual({ label: 'paused', tone: 'idle' });
    expect(isEmpty(fromView({ url: '', commit: '', status: 'none', updatedAt: 0 }))).toBe(true);
    expect(isEmpty(null)).toBe(true);
    expect(isEmpty(parsePreview(event({ url: '', status: 'pending' })))).toBe(false);
    expect(shortCommit('abcdef1234567890')).toBe('abcdef1');
    expect(frameable('https://preview.example.com/x')).toBe(true);
    expect(frameable('javascript:alert(1)')).toBe(false);
    expect(frameable('not a url')).toBe(false);
    // The gateway's path on this origin.
    expect(frameable('/preview/t1/')).toBe(true);
  });
});
