/**
 * Keeps docs/coming-from.md and test/coming-from.test.ts in step: every
 * example the test file marks with `// docs/coming-from.md, <name>` must
 * appear verbatim (minus the `describe` indentation) as a `ts` block of the
 * page, in the same order, the page must have no other `ts` block, and every
 * "Tested in" note must name a test that exists.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';

const read = (rel: string): string => readFileSync(new URL(rel, import.meta.url), 'utf8');
const page = read('../docs/coming-from.md');
const tests = read('./coming-from.test.ts');

/** The code between each marker comment and the next `test(` of its describe block. */
function markedExamples(): { name: string; code: string }[] {
  const lines = tests.split('\n');
  const out: { name: string; code: string }[] = [];
  lines.forEach((line, i) => {
    const m = /^ {2}\/\/ docs\/coming-from\.md, (.+)$/.exec(line);
    if (!m) return;
    const body: string[] = [];
    for (let j = i + 1; j < lines.length && !/^ {2}test(\.\w+)?\(/.test(lines[j]!); j++) body.push(lines[j]!);
    while (body.at(-1) === '') body.pop();
    out.push({ name: m[1]!, code: body.map((l) => l.replace(/^ {2}/, '')).join('\n') });
  });
  return out;
}

describe('docs/coming-from.md', () => {
  test('its ts blocks are the marked examples of coming-from.test.ts, verbatim and in order', () => {
    const examples = markedExamples();
    expect(examples.length).toBeGreaterThanOrEqual(6);
    const blocks = [...page.matchAll(/^```ts\n([\s\S]*?)\n```$/gm)].map((m) => m[1]);
    expect(blocks).toEqual(examples.map((e) => e.code));
  });

  test('every "Tested in" note names an existing describe and test', () => {
    const notes = [...page.matchAll(/^Tested in `test\/coming-from\.test\.ts`: `(.+?) > (.+)`$/gm)];
    expect(notes).toHaveLength(markedExamples().length);
    const quoted = (s: string) => [`'${s.replace(/'/g, "\\'")}'`, `"${s}"`];
    for (const [, suite, title] of notes) {
      expect(
        quoted(suite!).some((q) => tests.includes(`describe(${q}`)),
        suite,
      ).toBe(true);
      expect(
        quoted(title!).some((q) => tests.includes(`test(${q}`)),
        title,
      ).toBe(true);
    }
  });
});
