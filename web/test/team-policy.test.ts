import { describe, expect, it } from 'vitest';
import { bodyOf, errorText, isDirty, lineRange, locateError, rulesOf, textsOf } from '../src/team/policyForm';

describe('the rules as typed', () => {
  it('are one per line, trimmed, blank lines dropped', () => {
    expect(rulesOf('  Bash(git diff:*)\n\n Read \n')).toEqual(['Bash(git diff:*)', 'Read']);
    expect(rulesOf('')).toEqual([]);
    expect(bodyOf({ allow: 'Read\n', deny: '\nRead(.env)' })).toEqual({ allow: ['Read'], deny: ['Read(.env)'] });
  });

  it('are dirty only when they say something else than what is stored', () => {
    const stored = { allow: ['Read'], deny: ['Bash(rm:*)'] };
    expect(isDirty(textsOf(stored), stored)).toBe(false);
    expect(isDirty({ allow: ' Read\n\n', deny: 'Bash(rm:*)' }, stored)).toBe(false);
    expect(isDirty({ allow: 'Read\nEdit(src/**)', deny: 'Bash(rm:*)' }, stored)).toBe(true);
    expect(isDirty({ allow: 'Read', deny: '' }, stored)).toBe(true);
  });
});

describe("the server's refusal", () => {
  const text = { allow: 'Read', deny: 'Read(.env)\n\n  Bash(git diff  \nEdit(src/**)' };

  it('is traced to the line of the rule it names, blank lines counted', () => {
    const error = locateError('deny rule 2: missing `)` at the end', text);
    expect(error).toEqual({ list: 'deny', line: 3, rule: 'Bash(git diff', reason: 'missing `)` at the end' });
    expect(errorText(error!)).toBe('Line 3, Bash(git diff: missing `)` at the end');
    expect(lineRange(text.deny, 3)).toEqual([12, 29]);
    expect(text.deny.slice(...lineRange(text.deny, 3))).toBe('  Bash(git diff  ');
  });

  it('names a list without a rule when it is about the whole list', () => {
    const error = locateError('too many allow rules: 201, at most 200', text);
    expect(error).toEqual({ list: 'allow', line: null, rule: '', reason: 'too many allow rules: 201, at most 200' });
    expect(errorText(error!)).toBe('too many allow rules: 201, at most 200');
  });

  it('is left as it is when it names no list', () => {
    expect(locateError('only the team\'s owners and admins may change the team\'s policy', text)).toBeNull();
  });
});
