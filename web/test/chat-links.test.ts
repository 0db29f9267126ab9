import { describe, expect, it } from 'vitest';
import { parseLinks, shareText } from '../src/chat/links';

const ORIGIN = 'https://covibe.example';
const ID = '01a2424c-3dbe-7546-a787-fab87ccc4901';

describe('parseLinks', () => {
  it('leaves plain text alone', () => {
    expect(parseLinks('just words, <b>not html</b>', ORIGIN)).toEqual([
      { kind: 'text', text: 'just words, <b>not html</b>' },
    ]);
  });

  it('finds an agent link given as a URL of this app', () => {
    expect(parseLinks(`Look at this agent: ${ORIGIN}/agents/${ID}`, ORIGIN)).toEqual([
      { kind: 'text', text: 'Look at this agent: ' },
      { kind: 'agent', id: ID, text: `${ORIGIN}/agents/${ID}` },
    ]);
  });

  it('finds a bare agent path, and leaves sentence punctuation out', () => {
    expect(parseLinks(`see /agents/${ID}.`, ORIGIN)).toEqual([
      { kind: 'text', text: 'see ' },
      { kind: 'agent', id: ID, text: `/agents/${ID}` },
      { kind: 'text', text: '.' },
    ]);
  });

  it('treats another origin\'s /agents URL as an ordinary link', () => {
    const pieces = parseLinks(`https://elsewhere.example/agents/${ID}`, ORIGIN);
    expect(pieces).toEqual([{ kind: 'url', href: `https://elsewhere.example/agents/${ID}`, text: `https://elsewhere.example/agents/${ID}` }]);
  });

  it('links http(s) URLs only, never javascript: or data:', () => {
    const pieces = parseLinks('javascript:alert(1) data:text/html,x https://ok.example/a?b=c', ORIGIN);
    expect(pieces.filter((p) => p.kind !== 'text')).toEqual([
      { kind: 'url', href: 'https://ok.example/a?b=c', text: 'https://ok.example/a?b=c' },
    ]);
  });

  it('keeps a closing parenthesis that belongs to the URL', () => {
    const pieces = parseLinks('(see https://en.wikipedia.org/wiki/Foo_(bar))', ORIGIN);
    expect(pieces[1]).toEqual({
      kind: 'url',
      href: 'https://en.wikipedia.org/wiki/Foo_(bar)',
      text: 'https://en.wikipedia.org/wiki/Foo_(bar)',
    });
    expect(pieces[2]).toEqual({ kind: 'text', text: ')' });
  });

  it('does not take a path inside another word for an agent link', () => {
    expect(parseLinks('foo/agents/x', ORIGIN)).toEqual([{ kind: 'text', text: 'foo/agents/x' }]);
  });

  it('reads back what sharing writes', () => {
    const pieces = parseLinks(shareText(ID, ORIGIN), ORIGIN);
    expect(pieces.find((p) => p.kind === 'agent')).toMatchObject({ id: ID });
  });
});
