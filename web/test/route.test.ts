import { describe, expect, it } from 'vitest';
import { screenOf } from '../src/app/route';

describe('screenOf', () => {
  it('maps the contract routes', () => {
    expect(screenOf('/')).toEqual({ name: 'deck' });
    expect(screenOf('/workshop')).toEqual({ name: 'workshop' });
    expect(screenOf('/workshop/')).toEqual({ name: 'workshop' });
    expect(screenOf('/showcase')).toEqual({ name: 'showcase' });
    expect(screenOf('/team')).toEqual({ name: 'team' });
    expect(screenOf('/agents/01a2-b')).toEqual({ name: 'agent', id: '01a2-b' });
  });
  it('says when nothing matches', () => {
    expect(screenOf('/agents')).toEqual({ name: 'missing' });
    expect(screenOf('/agents/a/b')).toEqual({ name: 'missing' });
    expect(screenOf('/nope')).toEqual({ name: 'missing' });
  });
});
