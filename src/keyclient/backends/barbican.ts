import { z } from 'zod';
import { defineBackend } from '../backend.js';
import { keyError } from '../errors.js';

// Placeholder until the barbican backend lands.
export const barbicanBackend = defineBackend({
  name: 'barbican',
  description: 'barbican (not yet implemented)',
  optionsSchema: z.strictObject({}),
  async create() {
    throw keyError('E_NOT_SUPPORTED', 'barbican support not available yet');
  },
});
