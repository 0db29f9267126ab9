// One output line as a person reads it: its display items (render.ts) as elements.

import { Component } from 'preact';
import { useState } from 'preact/hooks';
import { Diff } from './Diff';
import { Markdown } from './Markdown';
import { display, formatCost, formatDuration, type Item, type Line } from './render';

/** Lines of a tool result shown before "Show all". */
const CLIP = 8;

function Clipped({ text, class: cls }: { text: string; class: string }) {
  const [all, setAll] = useState(false);
  const lines = text.split('\n');
  if (lines.length > 1 && lines[lines.length - 1] === '') lines.pop();
  const long = lines.length > CLIP;
  return (
    <>
      <pre class={cls}>{long && !all ? lines.slice(0, CLIP).join('\n') : text}</pre>
      {long && (
        <button type="button" class="btn btn-ghost btn-small more" onClick={() => setAll(!all)}>
          {all ? 'Show less' : `Show all ${lines.length} lines`}
        </button>
      )}
    </>
  );
}

/** Expansion state that outlives a row leaving the DOM (rows are virtualised). */
export type OpenSet = Set<string>;

function ItemView({ item, open, id }: { item: Item; open: OpenSet; id: string }) {
  switch (item.t) {
    case 'text':
      return (
        <div class="it-text">
          <Markdown text={item.text} />
        </div>
      );
    case 'thinking':
      return (
        <details class="it-thinking" open={open.has(id)} onToggle={(e) => toggle(open, id, e)}>
          <summary>Thinking</summary>
          <p>{item.text}</p>
        </details>
      );
    case 'user':
      return <div class="it-user">{item.text}</div>;
    case 'tool':
      return (
        <div class="it-tool">
          <details open={open.has(id)} onToggle={(e) => toggle(open, id, e)}>
            <summary>
              <span class="tool-name">{item.name}</span>
              {item.summary && <code class="tool-summary">{item.summary}</code>}
            </summary>
            <pre class="tool-input">{JSON.stringify(item.input, null, 2)}</pre>
          </details>
          {item.edits.map((edit, i) => (
            <Diff key={i} edit={edit} />
          ))}
        </div>
      );
    case 'result':
      return (
        <div class={item.isError ? 'it-result is-error' : 'it-result'}>
          <div class="it-label">{item.isError ? `${item.tool ?? 'Tool'} error` : `${item.tool ?? 'Tool'} result`}</div>
          {item.text ? <Clipped text={item.text} class="result-text" /> : <span class="muted">(no output)</span>}
        </div>
      );
    case 'init':
      return (
        <div class="it-meta">
          Session started · {item.model}
          {item.cwd ? ` · in ${item.cwd}` : ''} · {item.tools} tools
        </div>
      );
    case 'system':
      return <div class="it-meta">System: {item.subtype}</div>;
    case 'final':
      return (
        <div class={item.isError ? 'it-final is-error' : 'it-final'}>
          <div class="final-head">
            <strong>{item.isError ? '✗ Failed' : '✓ Done'}</strong>
            <span>{formatCost(item.costUsd)}</span>
            {item.turns != null && <span>{item.turns} turns</span>}
            {item.durationMs != null && <span>{formatDuration(item.durationMs)}</span>}
          </div>
          {item.text && <Markdown text={item.text} />}
        </div>
      );
    case 'stderr':
      return (
        <div class="it-stderr">
          <span class="it-label">stderr</span>
          <pre>{item.text}</pre>
        </div>
      );
    case 'raw':
      return <pre class="it-raw">{item.text}</pre>;
    case 'other':
      return <div class="it-meta">[{item.blockType}]</div>;
  }
}

function toggle(open: OpenSet, id: string, e: Event) {
  if ((e.currentTarget as HTMLDetailsElement).open) open.add(id);
  else open.delete(id);
}

interface RowProps {
  line: Line;
  raw: boolean;
  tools: Map<string, string>;
  open: OpenSet;
}

/** A line; re-rendered only when the line or the rendering changes (rows scroll by often). */
export class Row extends Component<RowProps> {
  shouldComponentUpdate(next: RowProps) {
    return next.line !== this.props.line || next.raw !== this.props.raw;
  }

  render({ line, raw, tools, open }: RowProps) {
    if (raw) {
      return <pre class={line.stream === 'stderr' ? 'raw-line is-stderr' : 'raw-line'}>{line.data}</pre>;
    }
    return (
      <>
        {display(line, tools).map((item, i) => (
          <ItemView key={i} item={item} open={open} id={`${line.seq}:${i}`} />
        ))}
      </>
    );
  }
}
