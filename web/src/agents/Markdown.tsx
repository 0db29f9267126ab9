// Agent text as Markdown, rendered from marked's tokens straight to Preact elements: agent output
// is never HTML (html tokens show as text), links go only to http(s) and open apart, images show
// as links (no request leaves for them).

import { Lexer, type Token, type Tokens } from 'marked';
import type { ComponentChildren, JSX } from 'preact';

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };

/** Marked leaves HTML entities in text for an HTML renderer; we show what they stand for. */
export function decodeEntities(s: string): string {
  if (!s.includes('&')) return s;
  return s.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (m, e: string) => {
    if (e[0] === '#') {
      const code = e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
      return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : m;
    }
    return ENTITIES[e.toLowerCase()] ?? m;
  });
}

/** A link target we follow: absolute http(s) only. */
export function safeHref(href: string): string | null {
  try {
    const url = new URL(href);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

function inline(tokens: Token[] | undefined): ComponentChildren {
  return tokens?.map((t, i) => inlineToken(t, i));
}

function inlineToken(t: Token, key: number): ComponentChildren {
  switch (t.type) {
    case 'text': {
      const tt = t as Tokens.Text;
      return tt.tokens ? inline(tt.tokens) : decodeEntities(tt.text);
    }
    case 'escape':
      return (t as Tokens.Escape).text;
    case 'strong':
      return <strong key={key}>{inline((t as Tokens.Strong).tokens)}</strong>;
    case 'em':
      return <em key={key}>{inline((t as Tokens.Em).tokens)}</em>;
    case 'del':
      return <del key={key}>{inline((t as Tokens.Del).tokens)}</del>;
    case 'codespan':
      return <code key={key}>{decodeEntities((t as Tokens.Codespan).text)}</code>;
    case 'br':
      return <br key={key} />;
    case 'link': {
      const l = t as Tokens.Link;
      const href = safeHref(l.href);
      if (!href) return <span key={key}>{inline(l.tokens)}</span>;
      return (
        <a key={key} href={href} target="_blank" rel="noopener noreferrer">
          {inline(l.tokens)}
        </a>
      );
    }
    case 'image': {
      const img = t as Tokens.Image;
      const href = safeHref(img.href);
      const label = `[image: ${decodeEntities(img.text) || img.href}]`;
      return href ? (
        <a key={key} href={href} target="_blank" rel="noopener noreferrer">
          {label}
        </a>
      ) : (
        label
      );
    }
    case 'checkbox':
      return (t as Tokens.Checkbox).checked ? '☑ ' : '☐ ';
    // html and anything new: the text as written.
    default:
      return 'raw' in t ? String(t.raw) : '';
  }
}

function block(t: Token, key: number): ComponentChildren {
  switch (t.type) {
    case 'space':
    case 'def':
      return null;
    case 'heading': {
      const h = t as Tokens.Heading;
      // Inside a row of output, headings are emphasis, not the page's outline.
      return (
        <p key={key} class={`md-h md-h${h.depth}`}>
          <strong>{inline(h.tokens)}</strong>
        </p>
      );
    }
    case 'paragraph':
      return <p key={key}>{inline((t as Tokens.Paragraph).tokens)}</p>;
    case 'text': {
      const tt = t as Tokens.Text;
      return <span key={key}>{tt.tokens ? inline(tt.tokens) : decodeEntities(tt.text)}</span>;
    }
    case 'code': {
      const c = t as Tokens.Code;
      return (
        <pre key={key} class="md-code">
          <code>{c.text}</code>
        </pre>
      );
    }
    case 'blockquote':
      return <blockquote key={key}>{blocks((t as Tokens.Blockquote).tokens)}</blockquote>;
    case 'list': {
      const l = t as Tokens.List;
      const items = l.items.map((item, i) => <li key={i}>{blocks(item.tokens)}</li>);
      return l.ordered ? (
        <ol key={key} start={typeof l.start === 'number' ? l.start : undefined}>
          {items}
        </ol>
      ) : (
        <ul key={key}>{items}</ul>
      );
    }
    case 'hr':
      return <hr key={key} />;
    case 'table': {
      const tb = t as Tokens.Table;
      const align = (i: number): JSX.CSSProperties | undefined => {
        const a = tb.align[i];
        return a ? { textAlign: a } : undefined;
      };
      return (
        <div key={key} class="md-table">
          <table>
            <thead>
              <tr>
                {tb.header.map((c, i) => (
                  <th key={i} style={align(i)}>
                    {inline(c.tokens)}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {tb.rows.map((row, r) => (
                <tr key={r}>
                  {row.map((c, i) => (
                    <td key={i} style={align(i)}>
                      {inline(c.tokens)}
                    </td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      );
    }
    case 'html':
      return (
        <p key={key} class="md-html">
          {(t as Tokens.HTML).text}
        </p>
      );
    default:
      return 'raw' in t ? <p key={key}>{String(t.raw)}</p> : null;
  }
}

function blocks(tokens: Token[]): ComponentChildren {
  return tokens.map((t, i) => block(t, i));
}

/** Markdown text as elements. */
export function Markdown({ text }: { text: string }) {
  let tokens: Token[];
  try {
    tokens = Lexer.lex(text, { gfm: true, breaks: true });
  } catch {
    return <p>{text}</p>;
  }
  return <div class="md">{blocks(tokens)}</div>;
}
