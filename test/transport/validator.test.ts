// Every session's SDK Server shares one JSON-schema validator, which loads Ajv on first use
// (src/transport/session.ts): Airlock never asks for elicitation, so start-up never loads it, but a
// validator that is asked still checks for real.
import { expect, it } from 'vitest';
import { sharedValidator } from '../../src/transport/session.js';

it('the shared validator loads Ajv when first asked and checks a schema', () => {
  const check = sharedValidator.getValidator<{ count: number }>({
    type: 'object',
    properties: { count: { type: 'integer', minimum: 1 } },
    required: ['count'],
  });
  expect(check({ count: 2 })).toMatchObject({ valid: true });
  const bad = check({ count: 'two' });
  expect(bad.valid).toBe(false);
  expect(bad.errorMessage).toMatch(/count must be integer/);
  expect(check({}).valid).toBe(false);
});
