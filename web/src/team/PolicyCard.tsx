// Tool policy: the rules that let the team's agents use tools without asking, or refuse them, in
// Claude Code's syntax. Owners and admins edit the team's rules; every member sees them and keeps
// stricter rules of their own. A change by someone else reloads what is shown (`policy_updated`),
// keeping whatever is being edited, with a note saying so; a save never overwrites rules changed
// since the editor read them (`ifUpdatedAt`) unless the editor chose to keep theirs.

import type { JSX } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, errorMessage } from '../api/client';
import { session } from '../api/session';
import type { PolicyRules, PolicyView } from '../api/types';
import { ago } from '../app/format';
import { ErrorText } from '../app/ui';
import { realtime } from '../realtime/socket';
import { memberName } from './members';
import {
  RULE_EXAMPLES,
  bodyOf,
  errorText,
  isDirty,
  lineRange,
  locateError,
  textsOf,
  type PolicyList,
  type RuleError,
  type RulesText,
} from './policyForm';
import { FieldError } from './VmFields';
import './policy.css';

const EMPTY: RulesText = { allow: '', deny: '' };

type Scope = 'team' | 'mine';

export function PolicyCard() {
  const me = session.value?.user.id;
  const [view, setView] = useState<PolicyView | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [team, setTeam] = useState<RulesText>(EMPTY);
  const [mine, setMine] = useState<RulesText>(EMPTY);
  // What handlers registered once read: the latest view and texts.
  const latest = useRef({ view: null as PolicyView | null, team: EMPTY, mine: EMPTY });
  // When the team's rules being edited were read (0: never set): a save says so.
  const teamBase = useRef(0);
  latest.current.team = team;
  latest.current.mine = mine;

  /** Shows `next`; a list being edited keeps its text (`true` when the team's did). */
  const show = (next: PolicyView): boolean => {
    const prev = latest.current.view;
    const editingTeam = prev !== null && isDirty(latest.current.team, prev.team);
    const editingMine = prev !== null && isDirty(latest.current.mine, prev.mine);
    if (!editingTeam) {
      setTeam(textsOf(next.team));
      teamBase.current = next.updatedAt ?? 0;
    }
    if (!editingMine) setMine(textsOf(next.mine));
    latest.current.view = next;
    setView(next);
    return editingTeam;
  };

  const load = async (): Promise<boolean> => {
    const { data, error: failure } = await api.GET('/api/team/policy');
    if (!data) {
      setError(errorMessage(failure));
      return false;
    }
    setError(null);
    return show(data);
  };

  useEffect(() => {
    void load();
    const offUpdated = realtime.on<{ updatedBy?: string }>('policy_updated', (data) => {
      void load().then((kept) => {
        const by = data?.updatedBy;
        if (kept && by !== me) {
          setNotice(`${(by && memberName(by)) || 'Someone'} changed the team's rules while you were editing them.`);
        }
      });
    });
    const offJoined = realtime.onJoined(() => void load());
    return () => {
      offUpdated();
      offJoined();
    };
  }, []);

  const save = async (scope: Scope, text: RulesText): Promise<string | null> => {
    const body = bodyOf(text);
    const { data, error: failure, response } =
      scope === 'team'
        ? await api.PUT('/api/team/policy', { body: { ...body, ifUpdatedAt: teamBase.current } })
        : await api.PUT('/api/team/policy/mine', { body });
    if (!data) {
      if (scope === 'team' && response.status === 409) {
        await load();
        setNotice('Someone changed the team’s rules since you began editing them.');
        return 'Not saved: look at their rules, or keep yours and save again.';
      }
      return errorMessage(failure);
    }
    latest.current.view = data;
    setView(data);
    if (scope === 'team') {
      setTeam(textsOf(data.team));
      teamBase.current = data.updatedAt ?? 0;
      setNotice(null);
    } else setMine(textsOf(data.mine));
    return null;
  };

  const changed = view?.updatedAt
    ? `Last changed ${view.updatedBy === me ? 'by you' : `by ${(view.updatedBy && memberName(view.updatedBy)) || 'a member'}`} ${ago(view.updatedAt)}.`
    : 'No team rules yet.';
  return (
    <section class="card wide policy" aria-labelledby="policy-title">
      <div class="card-head">
        <h2 id="policy-title">Tool policy</h2>
      </div>
      <p class="hint">
        What agents may do without asking. One rule per line, in Claude Code's syntax, such as{' '}
        {RULE_EXAMPLES.map((rule, i) => (
          <span key={rule}>
            <code>{rule}</code>
            {i < RULE_EXAMPLES.length - 2 ? ', ' : i === RULE_EXAMPLES.length - 2 ? ' or ' : '.'}
          </span>
        ))}{' '}
        Deny wins over allow; whatever no rule decides asks the agent's owner.
      </p>
      <ErrorText error={error} />
      {!view && !error && <p class="loading">Loading the tool policy…</p>}
      {view && (
        <>
          <div class="policy-head">
            <h3 id="policy-team-title">Team rules</h3>
            <p class="sub" data-testid="policy-changed">
              {changed}
            </p>
          </div>
          {notice && (
            <div class="notice" role="status">
              <p>{notice}</p>
              <div class="notice-actions">
                <button
                  type="button"
                  class="btn btn-small"
                  onClick={() => {
                    setTeam(textsOf(view.team));
                    teamBase.current = view.updatedAt ?? 0;
                    setNotice(null);
                  }}
                >
                  Show their rules
                </button>
                <button
                  type="button"
                  class="btn btn-small"
                  onClick={() => {
                    // Saving next replaces theirs, knowingly.
                    teamBase.current = view.updatedAt ?? 0;
                    setNotice(null);
                  }}
                >
                  Keep mine
                </button>
              </div>
            </div>
          )}
          {view.canEditTeam ? (
            <RulesEditor
              scope="team"
              titleId="policy-team-title"
              text={team}
              setText={setTeam}
              saved={view.team}
              saveLabel="Save team rules"
              onSave={(text) => save('team', text)}
            />
          ) : (
            <TeamRules rules={view.team} />
          )}
          <div class="policy-head">
            <h3 id="policy-mine-title">My stricter rules</h3>
            <p class="sub">
              For your agents only: your deny rules add to the team's, and your allow rules narrow them (a tool use
              then runs without asking only when both allow it).
            </p>
          </div>
          <RulesEditor
            scope="mine"
            titleId="policy-mine-title"
            text={mine}
            setText={setMine}
            saved={view.mine}
            saveLabel="Save my rules"
            onSave={(text) => save('mine', text)}
          />
        </>
      )}
    </section>
  );
}

/** The team's rules as a member who may not change them sees them. */
function TeamRules({ rules }: { rules: PolicyRules }) {
  const list = (list: PolicyList, title: string, none: string) => (
    <div class="rule-group">
      <h4 id={`policy-team-${list}-title`}>{title}</h4>
      {rules[list].length > 0 ? (
        <ul class="rule-list" aria-labelledby={`policy-team-${list}-title`}>
          {rules[list].map((rule, i) => (
            <li key={`${i}-${rule}`}>
              <code>{rule}</code>
            </li>
          ))}
        </ul>
      ) : (
        <p class="muted">{none}</p>
      )}
    </div>
  );
  return (
    <div class="policy-lists" data-testid="team-rules">
      {list('allow', 'Allowed without asking', 'No allow rules.')}
      {list('deny', 'Refused', 'No deny rules.')}
      <p class="hint">Only owners and admins change the team's rules.</p>
    </div>
  );
}

interface RulesEditorProps {
  scope: Scope;
  /** The heading that names the form. */
  titleId: string;
  text: RulesText;
  setText: (text: RulesText) => void;
  /** The rules as stored, to tell whether anything changed. */
  saved: PolicyRules;
  saveLabel: string;
  /** Saves; resolves with the server's refusal, or `null`. */
  onSave: (text: RulesText) => Promise<string | null>;
}

function RulesEditor({ scope, titleId, text, setText, saved, saveLabel, onSave }: RulesEditorProps) {
  const [error, setError] = useState<RuleError | null>(null);
  const [general, setGeneral] = useState<string | null>(null);
  const [status, setStatus] = useState('');
  const [busy, setBusy] = useState(false);
  const dirty = isDirty(text, saved);

  const submit = async (event: JSX.TargetedEvent<HTMLFormElement>) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    setGeneral(null);
    setStatus('');
    const failure = await onSave(text);
    setBusy(false);
    if (failure === null) {
      setStatus('Saved.');
      return;
    }
    const located = locateError(failure, text);
    if (!located) {
      setGeneral(failure);
      return;
    }
    setError(located);
    // The rule it names, selected in its list.
    const field = document.getElementById(`policy-${scope}-${located.list}`) as HTMLTextAreaElement | null;
    if (field) {
      field.focus();
      if (located.line !== null) field.setSelectionRange(...lineRange(text[located.list], located.line));
    }
  };

  const field = (list: PolicyList, label: string, placeholder: string) => {
    const id = `policy-${scope}-${list}`;
    const wrong = error?.list === list ? error : null;
    return (
      <div class="field">
        <label for={id}>{label}</label>
        <textarea
          id={id}
          class="rules-input"
          rows={4}
          value={text[list]}
          placeholder={placeholder}
          autocomplete="off"
          autocapitalize="off"
          autocorrect="off"
          spellcheck={false}
          aria-invalid={wrong ? true : undefined}
          aria-describedby={wrong ? `${id}-error` : undefined}
          onInput={(e) => {
            setText({ ...text, [list]: e.currentTarget.value });
            if (wrong) setError(null);
            setStatus('');
          }}
        />
        <FieldError id={`${id}-error`} message={wrong ? errorText(wrong) : undefined} />
      </div>
    );
  };

  return (
    <form class="policy-form" aria-labelledby={titleId} onSubmit={submit} noValidate>
      {field('allow', 'Allow', 'e.g. Bash(git diff:*)')}
      {field('deny', 'Deny', 'e.g. Read(.env)')}
      <ErrorText error={general} />
      <div class="policy-actions">
        <button type="submit" class="btn btn-primary btn-small" disabled={busy || !dirty}>
          {saveLabel}
        </button>
        <p role="status" class="status-line">
          {status}
        </p>
      </div>
    </form>
  );
}
