// A node --test reporter that writes one JSON line per skipped test or suite:
// {"name":"outer > inner","reason":"…","suite":true}. scripts/run-tests.mjs runs it beside
// the spec reporter, because node 20 counts a skipped describe() as a suite, not in its
// "skipped" total, so a whole suite that gated itself off would vanish from the summary.
// t.skip() inside a running test arrives as a skip too (data.skip holds its reason).
export default async function* skipReporter(source) {
  /** Names of the tests being reported, by nesting level: test:start comes before each one's result. */
  const path = [];
  for await (const event of source) {
    if (event.type === 'test:start') {
      path.length = event.data.nesting;
      path.push(event.data.name);
      continue;
    }
    if ((event.type !== 'test:pass' && event.type !== 'test:fail') || event.data.skip === undefined || event.data.skip === false) continue;
    const { nesting, name, skip, details } = event.data;
    const names = [...path.slice(0, nesting), name];
    yield `${JSON.stringify({ name: names.join(' > '), reason: skip === true ? '' : String(skip), suite: details?.type === 'suite' })}\n`;
  }
}
