/**
 * How a cryptsetup failure is classified: by its documented exit code,
 * except exit 1 when libdevmapper says the kernel has no device-mapper,
 * which is the host's fault (E_DM_UNAVAILABLE), not bad parameters. The
 * stderr below is cryptsetup 2.6.1's, verbatim, on a kernel without dm_mod.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cryptsetupFailureCode } from '../../../src/luks/commands/exec.js';

const NO_DM = 'Cannot initialize device-mapper. Is dm_mod kernel module loaded?\nCannot use device x, name is invalid or still in use.';

describe('cryptsetupFailureCode()', () => {
  it('exit 1 with "Cannot initialize device-mapper" is E_DM_UNAVAILABLE', () => {
    assert.equal(cryptsetupFailureCode(1, NO_DM), 'E_DM_UNAVAILABLE');
  });
  it('exit 1 otherwise stays E_CRYPTSETUP_PARAMS', () => {
    assert.equal(cryptsetupFailureCode(1, 'Invalid cipher specification.'), 'E_CRYPTSETUP_PARAMS');
  });
  it('the device-mapper words under another exit code keep that code', () => {
    assert.equal(cryptsetupFailureCode(5, NO_DM), 'E_DEVICE_BUSY');
  });
  it('an undocumented exit code is undefined (the caller answers E_CRYPTSETUP_FAILED)', () => {
    assert.equal(cryptsetupFailureCode(42, NO_DM), undefined);
  });
});
