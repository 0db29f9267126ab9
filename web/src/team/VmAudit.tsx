// A VM's audit log in its detail sheet: newest first, older pages on demand, the newest page read
// again whenever `refreshKey` changes (after the member acts on the VM).

import { useEffect, useState } from 'preact/hooks';
import { api, errorMessage } from '../api/client';
import { session } from '../api/session';
import { ErrorText } from '../app/ui';
import { AUDIT_PAGE, emptyAudit, olderQuery, withNewest, withOlder, type AuditPaging } from './auditPaging';
import { memberName } from './members';
import { auditLine } from './vmStatus';

export function VmAudit({ vmId, refreshKey }: { vmId: string; refreshKey: number }) {
  const [paging, setPaging] = useState<AuditPaging>(emptyAudit);
  const [loaded, setLoaded] = useState(false);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const read = async (query: { before?: number; limit: number }) => {
    const { data, error: failure } = await api.GET('/api/vm/{id}/audit', { params: { path: { id: vmId }, query } });
    if (!data) setError(errorMessage(failure));
    else setError(null);
    return data?.entries ?? null;
  };

  useEffect(() => {
    let live = true;
    void read({ limit: AUDIT_PAGE }).then((entries) => {
      if (!live) return;
      if (entries) setPaging((p) => withNewest(p, entries));
      setLoaded(true);
    });
    return () => {
      live = false;
    };
  }, [vmId, refreshKey]);

  const older = async () => {
    setLoading(true);
    const entries = await read(olderQuery(paging));
    setLoading(false);
    if (entries) setPaging((p) => withOlder(p, entries));
  };

  const me = session.value?.user;
  const nameOf = (id: string) => (id === me?.id ? `${me.displayName} (you)` : memberName(id));
  const now = Date.now();
  const lines = paging.entries.map((entry) => auditLine(entry, nameOf, now));
  return (
    <section class="audit" aria-labelledby="vm-audit-title">
      <h3 id="vm-audit-title">Audit log</h3>
      <ErrorText error={error} />
      {!loaded && <p class="loading">Loading the audit log…</p>}
      {loaded && lines.length === 0 && !error && <p class="muted">Nothing recorded yet.</p>}
      {lines.length > 0 && (
        <ol class="rows" aria-label="Audit log">
          {lines.map((line) => (
            <li key={line.id} data-audit-id={line.id}>
              <div class="grow">
                <div class="title">
                  {line.what}{' '}
                  <span class="badge" data-result={line.resultState}>
                    {line.result}
                  </span>
                </div>
                <div class="sub">
                  <time dateTime={new Date(line.at).toISOString()}>{line.when}</time> · {line.who}
                  {line.more.map((m) => ` · ${m}`).join('')}
                </div>
                {line.detail && <div class="sub audit-detail">{line.detail}</div>}
              </div>
            </li>
          ))}
        </ol>
      )}
      {loaded && lines.length > 0 && !paging.exhausted && (
        <button type="button" class="btn btn-small" onClick={() => void older()} disabled={loading}>
          {loading ? 'Loading…' : 'Load older'}
        </button>
      )}
    </section>
  );
}
