// How a tool request reads on its card: the command for Bash, the file and its before/after for
// Edit and Write, the questions for AskUserQuestion, the server's summary otherwise; outcomes,
// a late answer, the time left, and a question's answer as the input it is allowed with.
import { describe, expect, it } from 'vitest';
import { alreadyAnswered, answeredInput, forTool, outcome, shortSummary, shown, timeLeft } from '../src/approvals/summary';

const names = (id: string) => (id === 'u-sarah' ? 'you' : id === 'u-miguel' ? 'Miguel' : 'a teammate');

describe('a request as its card shows it', () => {
  it('shows a Bash command whole, with its description, and one line of it in lists', () => {
    const request = {
      tool: 'Bash',
      input: { command: 'npm test -- --watch=false\necho done', description: 'Run the tests' },
      summary: '',
    };
    expect(shown(request)).toEqual({
      kind: 'command',
      command: 'npm test -- --watch=false\necho done',
      description: 'Run the tests',
    });
    expect(shortSummary(request)).toBe('npm test -- --watch=false …');
    // The server's summary, when there is one, is what lists say.
    expect(shortSummary({ ...request, summary: 'npm test' })).toBe('npm test');
  });

  it('shows an Edit as its file and before/after, a Write as all added', () => {
    const edit = shown({
      tool: 'Edit',
      input: { file_path: 'src/greet.rs', old_string: 'fn greet() {', new_string: 'fn greet(name: &str) {' },
      summary: 'src/greet.rs (-1 +1 lines)',
    });
    expect(edit).toEqual({
      kind: 'edit',
      path: 'src/greet.rs',
      edits: [{ path: 'src/greet.rs', before: 'fn greet() {', after: 'fn greet(name: &str) {' }],
    });
    const write = shown({ tool: 'Write', input: { file_path: 'README.md', content: '# Hi\n' }, summary: '' });
    expect(write).toEqual({ kind: 'edit', path: 'README.md', edits: [{ path: 'README.md', before: '', after: '# Hi\n' }] });
    expect(shortSummary({ tool: 'Write', input: { file_path: 'README.md', content: '# Hi\n' }, summary: '' })).toBe('README.md');
  });

  it('shows the questions of AskUserQuestion with their options', () => {
    const input = {
      questions: [
        {
          question: 'Which greeting should the app use?',
          header: 'Greeting',
          options: [
            { label: 'Hello', description: 'Hello, NAME!' },
            { label: 'Hi', description: 'Hi, NAME!' },
          ],
          multiSelect: false,
        },
      ],
    };
    expect(shown({ tool: 'AskUserQuestion', input, summary: '' })).toEqual({
      kind: 'ask',
      questions: [
        {
          question: 'Which greeting should the app use?',
          header: 'Greeting',
          options: [
            { label: 'Hello', description: 'Hello, NAME!' },
            { label: 'Hi', description: 'Hi, NAME!' },
          ],
          multiSelect: false,
        },
      ],
    });
    expect(shortSummary({ tool: 'AskUserQuestion', input, summary: '' })).toBe('Which greeting should the app use?');
  });

  it('falls back to the summary and the input for other tools and odd inputs', () => {
    expect(shown({ tool: 'WebFetch', input: { url: 'https://example.com' }, summary: 'https://example.com' })).toEqual({
      kind: 'other',
      text: 'https://example.com',
      input: '{\n  "url": "https://example.com"\n}',
    });
    // A Bash request without a command (its input cut to {} for size): the summary.
    expect(shown({ tool: 'Bash', input: {}, summary: 'cat big.log' })).toEqual({ kind: 'other', text: 'cat big.log', input: '' });
    expect(shown({ tool: 'Edit', input: 'nonsense', summary: '' })).toEqual({ kind: 'other', text: 'Edit', input: '' });
    const long = shown({ tool: 'mcp__db__query', input: { sql: 'x'.repeat(2000) }, summary: 'q' });
    expect(long.kind === 'other' && long.input.length).toBe(600);
  });
});

describe('what became of a request', () => {
  it('says who decided, and how', () => {
    expect(outcome('allowed', 'u-sarah', names, 'allow')).toEqual({ text: 'Allowed by you', tone: 'ok' });
    expect(outcome('allowed', 'u-sarah', names, 'allow_always_for_agent')).toEqual({
      text: 'Allowed by you, and always for this agent from now on',
      tone: 'ok',
    });
    expect(outcome('denied', 'u-miguel', names)).toEqual({ text: 'Denied by Miguel', tone: 'bad' });
    expect(outcome('timed_out', 'timeout', names)).toEqual({ text: 'Not answered in time: denied', tone: 'warn' });
    expect(outcome('denied', 'ended', names)).toEqual({ text: 'Not needed: the agent ended first', tone: 'warn' });
    expect(outcome('allowed', null, names)).toEqual({ text: 'Allowed', tone: 'ok' });
  });

  it('reads a late answer from the server', () => {
    expect(alreadyAnswered("this request was already answered: allowed by the agent's owner")).toEqual({
      text: "Already answered: allowed by the agent's owner",
      tone: 'warn',
    });
    expect(alreadyAnswered('conflict')).toEqual({ text: 'Already answered', tone: 'warn' });
  });

  it('says the time left before the automatic deny', () => {
    const now = 1_000_000;
    expect(timeLeft(now + 4 * 60_000 + 59_000, now)).toBe('4 min');
    expect(timeLeft(now + 35_400, now)).toBe('35 s');
    expect(timeLeft(now - 5_000, now)).toBe('moments');
    expect(timeLeft(now + 61 * 60_000, now)).toBe('1 h 1 min');
  });
});

describe('answering a question', () => {
  const input = {
    questions: [
      { question: 'Which greeting?', header: 'Greeting', options: [{ label: 'Hello' }, { label: 'Hi' }], multiSelect: false },
      { question: 'Which pages?', header: 'Pages', options: [{ label: 'Home' }, { label: 'About' }], multiSelect: true },
    ],
  };

  it('adds each question’s answer to its input, labels comma-separated, own words last', () => {
    expect(
      answeredInput(input, [
        { labels: ['Hi'], other: '' },
        { labels: ['Home', 'About'], other: ' Contact ' },
      ]),
    ).toEqual({ ...input, answers: { 'Which greeting?': 'Hi', 'Which pages?': 'Home, About, Contact' } });
    expect(answeredInput(input, [{ labels: [], other: 'Hey there' }, { labels: ['Home'], other: '' }])).toEqual({
      ...input,
      answers: { 'Which greeting?': 'Hey there', 'Which pages?': 'Home' },
    });
  });

  it('is not ready while a question has no answer, or when there is no question', () => {
    expect(answeredInput(input, [{ labels: ['Hi'], other: '' }])).toBeNull();
    expect(answeredInput(input, [{ labels: ['Hi'], other: '' }, { labels: [], other: '  ' }])).toBeNull();
    expect(answeredInput({ questions: [] }, [])).toBeNull();
    expect(answeredInput('not an object', [{ labels: ['Hi'], other: '' }])).toBeNull();
  });

  it('says a question was answered or declined, not allowed or denied', () => {
    expect(forTool({ text: 'Allowed by you', tone: 'ok' }, 'AskUserQuestion')).toEqual({ text: 'Answered by you', tone: 'ok' });
    expect(forTool({ text: 'Denied by you', tone: 'bad' }, 'AskUserQuestion')).toEqual({ text: 'Declined by you', tone: 'bad' });
    expect(forTool({ text: 'Allowed by you', tone: 'ok' }, 'Bash')).toEqual({ text: 'Allowed by you', tone: 'ok' });
  });
});
