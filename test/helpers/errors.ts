import assert from 'node:assert/strict';

/** Asserts that `promise` rejects with a PortcullisError-shaped error of one of `codes`; returns it. */
export async function rejectsWithCode(promise: Promise<unknown>, ...codes: string[]): Promise<Error & { code: string }> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof Error, `expected a rejection with ${codes.join(' or ')}, got a resolution`);
  const code = (caught as { code?: unknown }).code;
  assert.ok(
    typeof code === 'string' && codes.includes(code),
    `expected ${codes.join(' or ')}, got ${String(code)}: ${caught.message}`,
  );
  return caught as Error & { code: string };
}

export function throwsWithCode(fn: () => unknown, ...codes: string[]): Error & { code: string } {
  try {
    fn();
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    assert.ok(typeof code === 'string' && codes.includes(code), `expected ${codes.join(' or ')}, got ${String(code)}`);
    return err as Error & { code: string };
  }
  assert.fail(`expected a throw with ${codes.join(' or ')}`);
}
