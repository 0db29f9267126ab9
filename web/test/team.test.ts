import { describe, expect, it } from 'vitest';
import { deviceName } from '../src/team/SignIn';
import { qrRuns } from '../src/team/Qr';
import { daemonCommand } from '../src/team/Vms';

describe('qrRuns', () => {
  it('covers the dark modules with runs inside the matrix', () => {
    const { size, runs } = qrRuns('covibe:sign-in?code=ABCD-EFGH');
    expect(size).toBeGreaterThanOrEqual(21);
    expect(runs.length).toBeGreaterThan(20);
    for (const [x, y, w] of runs) {
      expect(x).toBeGreaterThanOrEqual(0);
      expect(y).toBeLessThan(size);
      expect(x + w).toBeLessThanOrEqual(size);
    }
    // The top-left finder pattern: a full dark row of seven modules.
    expect(runs).toContainEqual([0, 0, 7]);
  });
});

describe('daemonCommand', () => {
  it('names the VM, the connector and the token in the environment, quoted', () => {
    const cmd = daemonCommand('vm-1', "tok'en", 'http://host:50054');
    expect(cmd).toContain(`COVIBE_VM_TOKEN='tok'\\''en' covibe vm-agent daemon`);
    expect(cmd).toContain(`--connector-url 'http://host:50054'`);
    expect(cmd).toContain(`--vm-id 'vm-1'`);
    expect(cmd).toContain(`--command 'claude -p --input-format stream-json --output-format stream-json --verbose --permission-prompt-tool stdio'`);
  });
});

describe('deviceName', () => {
  it('names common phones and browsers', () => {
    expect(
      deviceName('Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36'),
    ).toBe('Chrome on Android');
    expect(
      deviceName('Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1'),
    ).toBe('Safari on iPhone');
    expect(deviceName('')).toBe('Browser');
  });
});
