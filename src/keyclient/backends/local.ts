import { z } from 'zod';
import { defineBackend } from '../backend.js';
import { keyError } from '../errors.js';

// Placeholder until the local backend lands.
export const localBackend = defineBackend({
  name: 'local',
  description: 'local (not yet implemented)',
  optionsSchema: z.strictObject({}),
  async create() {
    throw keyError('E_NOT_SUPPORTED', 'local support not available yet');
  },
});
