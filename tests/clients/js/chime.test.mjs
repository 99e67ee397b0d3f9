// @aws-sdk/client-chime (v3) through the proxy: PutRetentionSettings / GetRetentionSettings
// with the proxy as the endpoint (reverse mode) and as an HTTP forward proxy, the change in the
// audit log, and a guardrail refusal as the SDK's typed ForbiddenException.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  ChimeClient, ForbiddenException, GetRetentionSettingsCommand, PutRetentionSettingsCommand,
} from '@aws-sdk/client-chime';
import { HttpProxyAgent } from 'http-proxy-agent';

import { captureRequests, header, withWorld } from './harness.mjs';

const ROOM = 'chime.room_retention';
const CONVERSATION = 'chime.conversation_retention';

const GUARDRAIL = `
[[guardrails]]
id = "legal-hold-1y"
min_days = 365
max_days = 2555
mode = "enforce"
`;

function chimeClient(w, mode) {
  const c = w.c;
  const config = {
    region: 'us-east-1',
    credentials: { accessKeyId: c.CLIENT_AK, secretAccessKey: c.CLIENT_SK },
    maxAttempts: 1,
  };
  if (mode === 'reverse') {
    config.endpoint = w.proxy.url;
  } else {
    // Forward mode: the real host's URL, sent in absolute form through the proxy.
    config.endpoint = `http://${c.REAL_HOSTS.chime}`;
    config.requestHandler = { httpAgent: new HttpProxyAgent(w.proxy.url) };
  }
  const client = new ChimeClient(config);
  return { client, sent: captureRequests(client, w) };
}

function oneRequest(recs) {
  assert.equal(recs.length, 1, 'the vendor must receive exactly one request, got ' +
    recs.map((r) => `${r.family} ${r.method} ${r.target}`).join('; '));
  assert.equal(recs[0].family, 'chime');
  return recs[0];
}

// What the vendor received is what the client sent, correctly (re-)signed.
function checkTransport(w, mode, rec, sent) {
  const c = w.c;
  assert.ok(rec.target.startsWith('/'), `vendor got a non-origin-form target ${rec.target}`);
  assert.ok(rec.sig?.ok, `SigV4 did not verify at the vendor: ${rec.sig?.reason}`);
  assert.equal(rec.sig.service, 'chime');
  assert.equal(rec.sig.region, 'us-east-1');
  if (mode === 'reverse') {
    assert.equal(rec.sig.accessKey, c.PROXY_AK, 'reverse mode re-signs with the proxy key');
  } else {
    assert.equal(rec.sig.accessKey, c.CLIENT_AK, 'forward mode keeps the client signature');
    assert.equal(header(rec.headers, 'host'), c.REAL_HOSTS.chime);
    assert.equal(header(rec.headers, 'authorization'), sent.headers.authorization);
  }
  assert.equal(rec.path, sent.path);
  assert.equal(rec.body, sent.body);
  for (const h of ['amz-sdk-invocation-id', 'content-type', 'user-agent']) {
    assert.equal(header(rec.headers, h), header(sent.headers, h), `header ${h}`);
  }
}

function checkEvent(w, ev, { name, readOnly, sent, rec, outcome = 'forwarded' }) {
  assert.equal(ev.eventName, name);
  assert.equal(ev.eventSource, 'chime.amazonaws.com');
  assert.equal(ev.eventType, 'AwsApiCall');
  assert.equal(ev.readOnly, readOnly);
  assert.equal(ev.outcome, outcome);
  assert.equal(ev.awsRegion, 'us-east-1');
  assert.equal(ev.userIdentity.accessKeyId, w.c.CLIENT_AK);
  assert.equal(ev.userAgent, header(sent.headers, 'user-agent'));
  assert.equal(ev.invocationId, header(sent.headers, 'amz-sdk-invocation-id'));
  assert.ok((ev.resources || []).some((r) => String(r.id).includes(w.c.ACCOUNT)),
    `resources ${JSON.stringify(ev.resources)} do not name the account`);
  if (rec) {
    assert.equal(ev.requestID, rec.requestId, "requestID is the vendor's x-amzn-RequestId");
    assert.equal(ev.httpStatus, rec.status);
  }
  const text = JSON.stringify(ev);
  assert.ok(!text.includes('Signature') && !text.includes(w.c.CLIENT_SK), 'secrets in the event');
}

function change(ev, target) {
  const hits = (ev.changes || []).filter((ch) => ch.target === target);
  assert.equal(hits.length, 1, `want one change of ${target}: ${JSON.stringify(ev.changes)}`);
  return hits[0];
}

for (const mode of ['reverse', 'forward']) {
  test(`client-chime ${mode}: PutRetentionSettings then GetRetentionSettings, audited`, async () => {
    await withWorld({}, async (w) => {
      const { client, sent } = chimeClient(w, mode);
      const settings = {
        RoomRetentionSettings: { RetentionDays: 365 },
        ConversationRetentionSettings: { RetentionDays: 180 },
      };
      let mark = await w.vendor.mark();
      const put = await client.send(new PutRetentionSettingsCommand({
        AccountId: w.c.ACCOUNT, RetentionSettings: settings,
      }));
      assert.deepEqual(put.RetentionSettings, settings);
      assert.ok(put.InitiateDeletionTimestamp instanceof Date, 'the SDK parsed the timestamp');
      let rec = oneRequest(await w.vendor.since(mark));
      assert.equal(rec.method, 'PUT');
      assert.equal(rec.path, `/accounts/${w.c.ACCOUNT}/retention-settings`);
      assert.deepEqual(JSON.parse(rec.body), { RetentionSettings: settings });
      checkTransport(w, mode, rec, sent.at(-1));
      let ev = await w.proxy.waitEvent((e) => e.requestID === rec.requestId, `requestID ${rec.requestId}`);
      checkEvent(w, ev, { name: 'PutRetentionSettings', readOnly: false, sent: sent.at(-1), rec });
      assert.deepEqual(change(ev, ROOM).new, 365);
      assert.deepEqual(change(ev, CONVERSATION).new, 180);
      assert.ok(String(change(ev, ROOM).resource).includes(w.c.ACCOUNT));

      mark = await w.vendor.mark();
      const got = await client.send(new GetRetentionSettingsCommand({ AccountId: w.c.ACCOUNT }));
      assert.deepEqual(got.RetentionSettings, settings);
      rec = oneRequest(await w.vendor.since(mark));
      assert.equal(rec.method, 'GET');
      checkTransport(w, mode, rec, sent.at(-1));
      ev = await w.proxy.waitEvent((e) => e.requestID === rec.requestId, `requestID ${rec.requestId}`);
      checkEvent(w, ev, { name: 'GetRetentionSettings', readOnly: true, sent: sent.at(-1), rec });
      assert.deepEqual(ev.changes ?? [], [], 'a read changes nothing');
    });
  });

  test(`client-chime ${mode}: a guardrail refusal is the SDK's ForbiddenException`, async () => {
    await withWorld({ extraConfig: GUARDRAIL }, async (w) => {
      const { client, sent } = chimeClient(w, mode);
      const mark = await w.vendor.mark();
      const err = await client.send(new PutRetentionSettingsCommand({
        AccountId: w.c.ACCOUNT,
        RetentionSettings: {
          RoomRetentionSettings: { RetentionDays: 30 },
          ConversationRetentionSettings: { RetentionDays: 400 },
        },
      })).then(() => assert.fail('a call below min_days was not refused'), (e) => e);
      assert.ok(err instanceof ForbiddenException, `want ForbiddenException, got ${err.name}: ${err.message}`);
      assert.equal(err.name, 'ForbiddenException');
      assert.equal(err.$metadata.httpStatusCode, 403);
      assert.equal(err.$metadata.attempts, 1, 'a refusal is not retried');
      assert.match(err.message, /legal-hold-1y/);
      assert.deepEqual(await w.vendor.since(mark), [], 'a denied call reached the vendor');
      const invocation = header(sent.at(-1).headers, 'amz-sdk-invocation-id');
      const ev = await w.proxy.waitEvent((e) => e.invocationId === invocation, `invocationId ${invocation}`);
      checkEvent(w, ev, { name: 'PutRetentionSettings', readOnly: false, sent: sent.at(-1), outcome: 'denied' });
      assert.equal(err.$metadata.requestId, ev.eventID, 'x-amzn-RequestId of a refusal is the eventID');
      assert.equal(ev.httpStatus, 403);
      assert.equal(ev.guardrail.decision, 'deny');
      assert.deepEqual(ev.guardrail.ruleIds, ['legal-hold-1y']);
      assert.equal(change(ev, ROOM).new, 30);
      assert.equal(change(ev, CONVERSATION).new, 400);
    });
  });
}
