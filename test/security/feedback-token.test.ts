// Feedback input always needs the session token, including from loopback: an empty or
// whitespace token in the query or the Authorization header must not count as one.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startDashboard, type DashboardHandle } from '../../dashboard/server.ts';
import { TOKEN, TestSession } from '../dashboard/fixtures.ts';
import { RecordingClient } from '../dashboard/ws-client.ts';

describe('feedback input token', () => {
  let handle: DashboardHandle;
  let session: TestSession;
  let base: string;

  before(async () => {
    session = new TestSession();
    handle = await startDashboard(session, { host: '127.0.0.1', port: 0, token: TOKEN });
    base = handle.url.replace(/^http/, 'ws').replace(/\/\?token=.*$/, '');
  });
  after(() => handle.close());

  const attempts: [string, string, Record<string, string>][] = [
    ['empty query token', '/feedback?token=', {}],
    ['empty bearer token', '/feedback', { authorization: 'Bearer ' }],
    ['empty query with empty bearer', '/feedback?token=', { authorization: 'Bearer  ' }],
  ];
  for (const [name, path, headers] of attempts) {
    test(`${name} cannot send input`, async () => {
      const client = await RecordingClient.connect(`${base}${path}`, headers);
      await client.waitFor(() => client.json('hello').length === 1, 'hello');
      assert.equal(client.json('hello')[0].canSend, false, 'hello says input is not allowed');
      client.send({ type: 'trigger', id: 't1', pulseIndex: 0 });
      await client.waitFor(() => client.json('error').length === 1, 'an error reply');
      assert.equal(client.json('error')[0].code, 'FEEDBACK_AUTH');
      assert.equal(session.inputs.length, 0, 'no input reached the session');
      client.close();
    });
  }

  test('the session token can send input', async () => {
    const client = await RecordingClient.connect(`${base}/feedback?token=${TOKEN}`);
    client.send({ type: 'trigger', id: 't2', pulseIndex: 1 });
    await client.waitFor(() => client.json('ack').length === 1, 'an acknowledgement');
    assert.equal(session.inputs.length, 1);
    session.inputs.length = 0;
    client.close();
  });
});
