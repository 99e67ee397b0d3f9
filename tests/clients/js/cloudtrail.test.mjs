// @aws-sdk/client-cloudtrail (v3) LookupEvents against the admin listener, as an operator's
// script reads the trail: every event newest first, an EventName filter, and `admin_token`
// (the SDK's session token) refused in AWS's AccessDeniedException shape when missing or wrong.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';

import { ChimeClient, GetRetentionSettingsCommand, PutRetentionSettingsCommand } from '@aws-sdk/client-chime';
import { AccessDeniedException, CloudTrailClient, LookupEventsCommand } from '@aws-sdk/client-cloudtrail';

import { EVENT_WAIT_MS, captureRequests, sleep, withWorld } from './harness.mjs';

function cloudtrail(w, sessionToken) {
  return new CloudTrailClient({
    endpoint: w.proxy.adminUrl, region: 'us-east-1', maxAttempts: 1,
    credentials: { accessKeyId: 'x', secretAccessKey: 'y', ...(sessionToken ? { sessionToken } : {}) },
  });
}

// A few audited calls from the JavaScript Chime client; returns the events, oldest first.
async function makeTrail(w) {
  const chime = new ChimeClient({
    endpoint: w.proxy.url, region: 'us-east-1', maxAttempts: 1,
    credentials: { accessKeyId: w.c.CLIENT_AK, secretAccessKey: w.c.CLIENT_SK },
  });
  captureRequests(chime, w);
  for (const days of [365, 400]) {
    await chime.send(new PutRetentionSettingsCommand({
      AccountId: w.c.ACCOUNT, RetentionSettings: { RoomRetentionSettings: { RetentionDays: days } },
    }));
  }
  await chime.send(new GetRetentionSettingsCommand({ AccountId: w.c.ACCOUNT }));
  const deadline = Date.now() + EVENT_WAIT_MS;
  for (;;) {
    const events = await w.proxy.query();
    if (events.length === 3 && events.every((e) => e.outcome === 'forwarded')) return events;
    assert.ok(events.length <= 3 && Date.now() < deadline,
      `want 3 forwarded events, have ${JSON.stringify(events.map((e) => [e.eventName, e.outcome]))}`);
    await sleep(50);
  }
}

test('client-cloudtrail: LookupEvents lists the audit log newest first', async () => {
  await withWorld({}, async (w) => {
    const events = await makeTrail(w);
    const newestFirst = events.map((e) => e.eventID).reverse();
    const resp = await cloudtrail(w).send(new LookupEventsCommand({}));
    assert.equal(resp.$metadata.httpStatusCode, 200);
    assert.deepEqual(resp.Events.map((e) => e.EventId), newestFirst);
    assert.equal(resp.NextToken, undefined);
    const byId = new Map(events.map((e) => [e.eventID, e]));
    for (const le of resp.Events) {
      const ev = byId.get(le.EventId);
      assert.equal(le.EventName, ev.eventName);
      assert.equal(le.EventSource, 'chime.amazonaws.com');
      assert.equal(le.ReadOnly, String(ev.readOnly));
      assert.equal(le.AccessKeyId, w.c.CLIENT_AK);
      assert.ok(le.EventTime instanceof Date, 'the SDK parsed EventTime');
      assert.equal(le.EventTime.getTime(), Date.parse(ev.eventTime));
      const ct = JSON.parse(le.CloudTrailEvent);
      assert.equal(ct.eventID, ev.eventID);
      assert.ok(!le.CloudTrailEvent.includes(w.c.CLIENT_SK) && !le.CloudTrailEvent.includes('Signature='));
    }

    const puts = await cloudtrail(w).send(new LookupEventsCommand({
      LookupAttributes: [{ AttributeKey: 'EventName', AttributeValue: 'PutRetentionSettings' }],
    }));
    assert.deepEqual(puts.Events.map((e) => e.EventId),
      newestFirst.filter((id) => byId.get(id).eventName === 'PutRetentionSettings'));

    const page = await cloudtrail(w).send(new LookupEventsCommand({ MaxResults: 2 }));
    assert.deepEqual(page.Events.map((e) => e.EventId), newestFirst.slice(0, 2));
    assert.ok(page.NextToken, 'MaxResults 2 of 3 events gave no NextToken');
    const rest = await cloudtrail(w).send(new LookupEventsCommand({ MaxResults: 2, NextToken: page.NextToken }));
    assert.deepEqual(rest.Events.map((e) => e.EventId), newestFirst.slice(2));
  });
});

test('client-cloudtrail: admin_token is the session token; without it AccessDeniedException (403)', async () => {
  const token = `admin-token-${randomUUID()}`;
  await withWorld({ serverConfig: `admin_token = ${JSON.stringify(token)}` }, async (w) => {
    w.secrets.push(token);
    for (const sessionToken of [undefined, `not-${token}`]) {
      const err = await cloudtrail(w, sessionToken).send(new LookupEventsCommand({}))
        .then(() => assert.fail('LookupEvents without the admin token was answered'), (e) => e);
      assert.ok(err instanceof AccessDeniedException, `want AccessDeniedException, got ${err.name}: ${err.message}`);
      assert.equal(err.$metadata.httpStatusCode, 403);
      assert.equal(err.$fault, 'client');
      assert.ok(!JSON.stringify(err).includes(token), 'the error echoes the admin token');
    }
    const events = await makeTrail(w);
    const resp = await cloudtrail(w, token).send(new LookupEventsCommand({}));
    assert.deepEqual(resp.Events.map((e) => e.EventId), events.map((e) => e.eventID).reverse());
  });
});
