// A file edit as a line diff: removed lines, added lines, unchanged context.

import { useMemo, useState } from 'preact/hooks';
import { diffRows, type FileEdit } from './render';

/** Rows shown before "Show all". */
const SHOWN = 14;

export function Diff({ edit }: { edit: FileEdit }) {
  const rows = useMemo(() => diffRows(edit.before, edit.after), [edit]);
  const [all, setAll] = useState(false);
  const shown = all ? rows : rows.slice(0, SHOWN);
  const added = rows.filter((r) => r.kind === 'add').length;
  const removed = rows.filter((r) => r.kind === 'del').length;
  return (
    <div class="diff">
      <div class="diff-head">
        <span class="diff-path">{edit.path || 'file'}</span>
        <span class="diff-count">
          <span class="diff-added">+{added}</span> <span class="diff-removed">−{removed}</span>
        </span>
      </div>
      <pre class="diff-body" aria-label={`Changes to ${edit.path || 'the file'}`}>
        {shown.map((r, i) => (
          <div key={i} class={`diff-${r.kind}`}>
            <span class="diff-sign" aria-hidden="true">
              {r.kind === 'add' ? '+' : r.kind === 'del' ? '−' : ' '}
            </span>
            <span class="sr-only">{r.kind === 'add' ? 'added: ' : r.kind === 'del' ? 'removed: ' : ''}</span>
            {r.text || ' '}
          </div>
        ))}
      </pre>
      {rows.length > SHOWN && (
        <button
          type="button"
          class="btn btn-ghost btn-small more"
          onClick={() => setAll(!all)}
        >
          {all ? 'Show less' : `Show all ${rows.length} lines`}
        </button>
      )}
    </div>
  );
}
