// @vitest-environment jsdom
import { h, render } from 'preact';
import { describe, expect, it } from 'vitest';
import { Markdown, decodeEntities, safeHref } from '../src/agents/Markdown';
import {
  diffRows,
  display,
  formatCost,
  formatDuration,
  toolSummary,
  type Line,
} from '../src/agents/render';

const out = (event: unknown, data = JSON.stringify(event), seq = 0): Line => ({ seq, stream: 'stdout', data, event });
const toolUse = (name: string, input: unknown, id = 'toolu_1') =>
  out({ kind: 'assistant', blocks: [{ type: 'tool_use', id, name, input }] });

describe('display items of each event kind', () => {
  it('assistant text', () => {
    expect(display(out({ kind: 'assistant', blocks: [{ type: 'text', text: 'Hello **there**' }] }))).toEqual([
      { t: 'text', text: 'Hello **there**' },
    ]);
  });

  it('several blocks of one message, thinking and unknown blocks', () => {
    const items = display(
      out({
        kind: 'assistant',
        blocks: [
          { type: 'thinking', text: 'hmm' },
          { type: 'text', text: 'a' },
          { type: 'other', blockType: 'server_tool_use' },
        ],
      }),
    );
    expect(items.map((i) => i.t)).toEqual(['thinking', 'text', 'other']);
  });

  it('tool calls collapse to the name and a one-line summary', () => {
    const summary = (name: string, input: unknown) => {
      const [item] = display(toolUse(name, input));
      return item?.t === 'tool' ? [item.name, item.summary] : null;
    };
    expect(summary('Bash', { command: 'cargo test\n--all', description: 'Run tests' })).toEqual(['Bash', 'cargo test …']);
    expect(summary('Read', { file_path: 'src/main.rs' })).toEqual(['Read', 'src/main.rs']);
    expect(summary('Edit', { file_path: 'a.ts', old_string: 'x', new_string: 'y' })).toEqual(['Edit', 'a.ts']);
    expect(summary('Write', { file_path: 'b.ts', content: 'z' })).toEqual(['Write', 'b.ts']);
    expect(summary('Grep', { pattern: 'fn main', path: 'src' })).toEqual(['Grep', 'fn main']);
    expect(summary('Glob', { pattern: '**/*.rs' })).toEqual(['Glob', '**/*.rs']);
    expect(summary('WebFetch', { limit: 3, url: 'https://example.com', prompt: 'p' })).toEqual(['WebFetch', 'https://example.com']);
    expect(toolSummary('Bash', 'not an object')).toBe('');
    expect(toolSummary('Bash', { command: 'x'.repeat(500) }).length).toBeLessThanOrEqual(160);
  });

  it('a tool call keeps its input for expanding', () => {
    const [item] = display(toolUse('Bash', { command: 'ls', description: 'List' }));
    expect(item).toMatchObject({ t: 'tool', input: { command: 'ls', description: 'List' }, edits: [] });
  });

  it('file edits become diffs: Edit, MultiEdit and Write', () => {
    const [edit] = display(toolUse('Edit', { file_path: 'src/lib.rs', old_string: 'a\nb\nc\n', new_string: 'a\nB\nc\n' }));
    expect(edit?.t === 'tool' && edit.edits).toEqual([{ path: 'src/lib.rs', before: 'a\nb\nc\n', after: 'a\nB\nc\n' }]);
    expect(diffRows('a\nb\nc\n', 'a\nB\nc\n')).toEqual([
      { kind: 'same', text: 'a' },
      { kind: 'del', text: 'b' },
      { kind: 'add', text: 'B' },
      { kind: 'same', text: 'c' },
    ]);
    const [multi] = display(
      toolUse('MultiEdit', {
        file_path: 'x.py',
        edits: [
          { old_string: '1', new_string: '2' },
          { old_string: '3', new_string: '4' },
        ],
      }),
    );
    expect(multi?.t === 'tool' && multi.edits.length).toBe(2);
    const [write] = display(toolUse('Write', { file_path: 'new.txt', content: 'one\ntwo' }));
    expect(write?.t === 'tool' && write.edits).toEqual([{ path: 'new.txt', before: '', after: 'one\ntwo' }]);
    expect(diffRows('', 'one\ntwo')).toEqual([
      { kind: 'add', text: 'one' },
      { kind: 'add', text: 'two' },
    ]);
  });

  it('tool results name their tool and set errors apart', () => {
    const tools = new Map<string, string>();
    display(toolUse('Bash', { command: 'false' }, 'toolu_9'), tools);
    const ok = display(out({ kind: 'user', blocks: [{ type: 'tool_result', toolUseId: 'toolu_9', content: 'fine', isError: false }] }), tools);
    expect(ok).toEqual([{ t: 'result', tool: 'Bash', text: 'fine', isError: false }]);
    const err = display(
      out({
        kind: 'user',
        blocks: [{ type: 'tool_result', toolUseId: 'toolu_9', content: [{ type: 'text', text: 'exit 1' }, { type: 'image' }], isError: true }],
      }),
      tools,
    );
    expect(err).toEqual([{ t: 'result', tool: 'Bash', text: 'exit 1\n[image]', isError: true }]);
    const unknown = display(out({ kind: 'user', blocks: [{ type: 'tool_result', toolUseId: 'other', content: null, isError: false }] }));
    expect(unknown).toEqual([{ t: 'result', tool: null, text: '', isError: false }]);
  });

  it('the final result with cost, turns and duration', () => {
    expect(display(out({ kind: 'result', isError: false, costUsd: 0.0153, durationMs: 65_000, turns: 5, result: 'Done.' }))).toEqual([
      { t: 'final', isError: false, costUsd: 0.0153, turns: 5, durationMs: 65_000, text: 'Done.' },
    ]);
    expect(display(out({ kind: 'result', isError: true, costUsd: 1.5, turns: 2, result: 'Failed.' }))[0]).toMatchObject({
      t: 'final',
      isError: true,
      durationMs: null,
    });
    expect(formatCost(0.0153)).toBe('$0.0153');
    expect(formatCost(12.5)).toBe('$12.50');
    expect(formatCost(null)).toBe('—');
    expect(formatDuration(65_000)).toBe('1m 05s');
    expect(formatDuration(3_725_000)).toBe('1h 02m');
  });

  it('system init, other system events, raw lines and stderr', () => {
    expect(display(out({ kind: 'init', model: 'claude-sonnet-4-5', cwd: '/src/app', tools: ['Bash', 'Edit'], sessionId: 's' }))).toEqual([
      { t: 'init', model: 'claude-sonnet-4-5', cwd: '/src/app', tools: 2 },
    ]);
    expect(display(out({ kind: 'system', subtype: 'compact_boundary' }))).toEqual([{ t: 'system', subtype: 'compact_boundary' }]);
    expect(display(out({ kind: 'raw' }, 'Compiling covibe v0.1.0'))).toEqual([{ t: 'raw', text: 'Compiling covibe v0.1.0' }]);
    // A shape we do not know, or none at all, shows the line itself.
    expect(display(out({ kind: 'brand_new' }, '{"x":1}'))).toEqual([{ t: 'raw', text: '{"x":1}' }]);
    expect(display(out(null, 'plain'))).toEqual([{ t: 'raw', text: 'plain' }]);
    expect(display(out({ kind: 'assistant', blocks: 'nope' }, 'odd'))).toEqual([{ t: 'raw', text: 'odd' }]);
    expect(display({ seq: 3, stream: 'stderr', data: 'warning: x', event: { kind: 'raw' } })).toEqual([{ t: 'stderr', text: 'warning: x' }]);
  });
});

describe('Markdown', () => {
  const mount = (text: string) => {
    const root = document.createElement('div');
    render(h(Markdown, { text }), root);
    return root;
  };

  it('never produces HTML from agent text: tags show as text', () => {
    const root = mount('Hi <script>alert(1)</script> and <img src=x onerror="alert(2)">\n\n<div onclick="x()">block</div>');
    expect(root.querySelector('script, img, div[onclick]')).toBeNull();
    expect(root.textContent).toContain('<script>');
    expect(root.textContent).toContain('<img src=x onerror="alert(2)">');
    expect(root.textContent).toContain('<div onclick="x()">block</div>');
    for (const el of root.querySelectorAll('*')) {
      for (const attr of el.getAttributeNames()) expect(attr.startsWith('on')).toBe(false);
    }
  });

  it('links only to http(s), opened apart', () => {
    const root = mount('[ok](https://example.com/a) [bad](javascript:alert(1)) [rel](/x) ![pic](https://example.com/p.png)');
    const links = [...root.querySelectorAll('a')];
    expect(links.map((a) => a.getAttribute('href'))).toEqual(['https://example.com/a', 'https://example.com/p.png']);
    for (const a of links) {
      expect(a.getAttribute('rel')).toContain('noopener');
      expect(a.getAttribute('target')).toBe('_blank');
    }
    expect(root.querySelector('img')).toBeNull();
    expect(root.textContent).toContain('bad');
    expect(safeHref('javascript:alert(1)')).toBeNull();
    expect(safeHref('data:text/html,x')).toBeNull();
  });

  it('renders structure: emphasis, code blocks in monospace, lists, tables', () => {
    const root = mount('**bold** _it_ `a<b>`\n\n```rust\nfn main() {}\n```\n\n- one\n- two\n\n1. first\n\n| a | b |\n|---|---|\n| 1 | 2 |');
    expect(root.querySelector('strong')?.textContent).toBe('bold');
    expect(root.querySelector('em')?.textContent).toBe('it');
    expect(root.querySelector('p code')?.textContent).toBe('a<b>');
    expect(root.querySelector('pre code')?.textContent).toBe('fn main() {}');
    expect(root.querySelectorAll('ul li').length).toBe(2);
    expect(root.querySelector('ol li')?.textContent).toBe('first');
    expect(root.querySelectorAll('td').length).toBe(2);
  });

  it('shows entities as the characters they stand for', () => {
    expect(decodeEntities('a &amp; b &lt;c&gt; &#39; &#x41; &bogus;')).toBe("a & b <c> ' A &bogus;");
    expect(mount('Fish &amp; chips').textContent).toBe('Fish & chips');
  });
});
