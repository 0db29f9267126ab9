// The tool-use policy as data: the rules as typed (one per line), the `PUT /api/team/policy`
// body made from them, and the server's refusal ("deny rule 2: missing `)` at the end") traced
// back to the line it names.

import type { PolicyRules } from '../api/types';

export type PolicyList = 'allow' | 'deny';

/** Both lists as typed: one rule per line. */
export interface RulesText {
  allow: string;
  deny: string;
}

/** A refusal the server tied to one list: the line it names (1-based), when it names a rule. */
export interface RuleError {
  list: PolicyList;
  /** The line of that list's text, when the refusal names a rule. */
  line: number | null;
  /** The rule as typed on that line. */
  rule: string;
  /** Why, in the server's words (without the "deny rule 2:" it began with). */
  reason: string;
}

/** The examples the editor shows. */
export const RULE_EXAMPLES = ['Bash(git diff:*)', 'Edit(src/**)', 'Read', 'WebFetch(domain:github.com)'];

/** The rules of a list as typed: each line trimmed, blank lines dropped. */
export function rulesOf(text: string): string[] {
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
}

export const textOf = (rules: readonly string[]): string => rules.join('\n');

export const textsOf = (rules: PolicyRules): RulesText => ({ allow: textOf(rules.allow), deny: textOf(rules.deny) });

/** The body of `PUT /api/team/policy` or `/api/team/policy/mine`. */
export function bodyOf(text: RulesText): PolicyRules {
  return { allow: rulesOf(text.allow), deny: rulesOf(text.deny) };
}

/** Whether the text says something other than `rules` (blank lines and spaces aside). */
export function isDirty(text: RulesText, rules: PolicyRules): boolean {
  const typed = bodyOf(text);
  const same = (a: string[], b: string[]) => a.length === b.length && a.every((r, i) => r === b[i]);
  return !same(typed.allow, rules.allow) || !same(typed.deny, rules.deny);
}

/** The line (1-based) of the `number`th rule of `text`, blank lines counted as the text has them. */
function lineOfRule(text: string, number: number): { line: number; rule: string } | null {
  let seen = 0;
  const lines = text.split('\n');
  for (const [i, line] of lines.entries()) {
    const rule = line.trim();
    if (rule === '') continue;
    seen += 1;
    if (seen === number) return { line: i + 1, rule };
  }
  return null;
}

/**
 * The server's refusal of a save, traced to its list and line: "deny rule 2: …" names the second
 * rule of the deny list, "too many allow rules: …" the allow list. Anything else is `null` (shown
 * above the form as it is).
 */
export function locateError(message: string, text: RulesText): RuleError | null {
  const named = /^(allow|deny) rule (\d+): ([\s\S]+)$/.exec(message);
  if (named) {
    const [, which, number, reason] = named as unknown as [string, PolicyList, string, string];
    const at = lineOfRule(text[which], Number(number));
    return { list: which, line: at?.line ?? null, rule: at?.rule ?? '', reason };
  }
  const count = /^too many (allow|deny) rules/.exec(message);
  if (count) return { list: count[1] as PolicyList, line: null, rule: '', reason: message };
  return null;
}

/** What the editor shows under the list a refusal names. */
export function errorText(error: RuleError): string {
  if (error.line === null) return error.reason;
  return `Line ${error.line}, ${error.rule}: ${error.reason}`;
}

/** Where line `line` (1-based) of `text` starts and ends, to select it. */
export function lineRange(text: string, line: number): [number, number] {
  const lines = text.split('\n');
  const start = lines.slice(0, line - 1).reduce((at, l) => at + l.length + 1, 0);
  return [start, start + (lines[line - 1]?.length ?? 0)];
}
