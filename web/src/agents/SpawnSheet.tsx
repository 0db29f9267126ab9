// The spawn sheet: a task, which of my VMs, start.

import { useEffect, useRef, useState } from 'preact/hooks';
import { errorMessage, refreshVms, spawn, vms } from './store';

export function SpawnSheet({ onClose }: { onClose: () => void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  const [task, setTask] = useState('');
  const [vm, setVm] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    const d = dialog.current;
    if (d && !d.open) d.showModal?.();
    void refreshVms().catch(() => {});
  }, []);

  const list = vms.value;
  useEffect(() => {
    if (list?.length && !list.some((v) => v.id === vm)) setVm(list[0]?.id ?? '');
  }, [list]);

  return (
    <dialog
      ref={dialog}
      class="spawn-sheet"
      aria-label="New agent"
      // Escape, Cancel and a started agent all close the dialog first (focus goes back to
      // "New agent"); the sheet leaves the page after.
      onClose={onClose}
    >
      <form
        method="dialog"
        onSubmit={async (e) => {
          e.preventDefault();
          if (!task.trim() || busy) return;
          setBusy(true);
          setError(null);
          try {
            await spawn(task.trim(), vm || null);
            dialog.current?.close();
          } catch (err) {
            setError(errorMessage(err));
          } finally {
            setBusy(false);
          }
        }}
      >
        <h2>New agent</h2>
        <label for="spawn-task">Task</label>
        <textarea
          id="spawn-task"
          rows={4}
          required
          placeholder="What should the agent do?"
          value={task}
          onInput={(e) => setTask(e.currentTarget.value)}
        />
        <label for="spawn-vm">VM</label>
        <select id="spawn-vm" value={vm} onChange={(e) => setVm(e.currentTarget.value)}>
          {list?.length ? (
            list.map((v) => (
              <option key={v.id} value={v.id}>
                {v.name}
              </option>
            ))
          ) : (
            <option value="">This machine</option>
          )}
        </select>
        {error && (
          <p class="alert" role="alert">
            {error}
          </p>
        )}
        <div class="sheet-actions">
          <button type="button" class="btn" onClick={() => dialog.current?.close()}>
            Cancel
          </button>
          <button type="submit" class="btn btn-primary" disabled={busy || !task.trim()}>
            {busy ? 'Starting…' : 'Start agent'}
          </button>
        </div>
      </form>
    </dialog>
  );
}
