// @slack/web-api majors 7 (axios; takes an http.Agent) and 8 (fetch; takes a `fetch`
// function) through the proxy, both ways in, as the Python slack_sdk tests do: `slackApiUrl`
// pointed at the proxy (reverse), and the real `http://slack.com/api/` sent in absolute form
// through the proxy (forward: an HttpProxyAgent for 7, undici's ProxyAgent behind a custom
// fetch for 8). A guardrail refusal is the client's platform error with Slack's error code.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';

import { HttpProxyAgent } from 'http-proxy-agent';
import * as slack7 from 'slack-web-api-7';
import * as slack8 from 'slack-web-api-8';
import { ProxyAgent, fetch as undiciFetch } from 'undici';

import { header, withWorld } from './harness.mjs';

const METHOD = 'admin.conversations.setCustomRetention';
const GUARDRAIL = `
[[guardrails]]
id = "legal-hold-1y"
min_days = 365
mode = "enforce"
`;

// Version 8's documented way to use a proxy: its own `fetch`, here undici's with a ProxyAgent
// that sends plain-HTTP requests in absolute form (proxyTunnel: false) instead of CONNECT.
function proxyFetch(proxyUrl) {
  const dispatcher = new ProxyAgent({ uri: proxyUrl, proxyTunnel: false });
  return (url, init) => undiciFetch(url, { ...init, dispatcher });
}

const MAJORS = {
  7: {
    sdk: slack7,
    client(w, mode) {
      const options = { retryConfig: { retries: 0 }, timeout: 20_000 };
      if (mode === 'reverse') {
        options.slackApiUrl = `${w.proxy.url}/api/`;
      } else {
        options.slackApiUrl = 'http://slack.com/api/';
        options.agent = new HttpProxyAgent(w.proxy.url);
      }
      return new slack7.WebClient(w.c.SLACK_TOKEN, options);
    },
  },
  8: {
    sdk: slack8,
    client(w, mode) {
      const options = { retryConfig: { retries: 0 }, timeout: 20_000 };
      if (mode === 'reverse') {
        options.slackApiUrl = `${w.proxy.url}/api/`;
      } else {
        options.slackApiUrl = 'http://slack.com/api/';
        options.fetch = proxyFetch(w.proxy.url);
      }
      return new slack8.WebClient(w.c.SLACK_TOKEN, options);
    },
  },
};

function checkTransport(w, mode, rec, params) {
  assert.equal(rec.family, 'slack');
  assert.equal(rec.method, 'POST');
  assert.equal(rec.target, `/api/${METHOD}`);
  assert.equal(header(rec.headers, 'authorization'), `Bearer ${w.c.SLACK_TOKEN}`, 'the bearer token passes unchanged');
  if (mode === 'forward') assert.equal(header(rec.headers, 'host'), w.c.REAL_HOSTS.slack);
  assert.match(header(rec.headers, 'content-type'), /^application\/x-www-form-urlencoded/);
  assert.deepEqual(Object.fromEntries(new URLSearchParams(rec.body)),
    Object.fromEntries(Object.entries(params).map(([k, v]) => [k, String(v)])));
}

function checkEvent(w, ev, major, { outcome = 'forwarded' } = {}) {
  assert.equal(ev.eventName, METHOD);
  assert.equal(ev.eventSource, 'slack.com');
  assert.equal(ev.eventType, 'SlackApiCall');
  assert.equal(ev.readOnly, false);
  assert.equal(ev.outcome, outcome);
  assert.ok(String(ev.userAgent).startsWith(`@slack:web-api/${major}.`),
    `userAgent ${ev.userAgent} is not @slack/web-api ${major}`);
  const fp = ev.userIdentity.tokenFingerprint;
  assert.match(fp, /^hmac-sha256:[0-9a-f]{16,}$/);
  assert.notEqual(fp.slice('hmac-sha256:'.length), createHash('sha256').update(w.c.SLACK_TOKEN).digest('hex'));
  assert.equal(ev.userIdentity.tokenType, 'xoxp');
  assert.ok(!JSON.stringify(ev).includes(w.c.SLACK_TOKEN), 'the Slack token is in the event');
  assert.ok((ev.resources || []).some((r) => r.id === w.c.SLACK_CHANNEL), JSON.stringify(ev.resources));
  const changes = ev.changes || [];
  assert.equal(changes.length, 1, JSON.stringify(changes));
  assert.equal(changes[0].target, 'slack.channel_retention');
  assert.equal(changes[0].resource, w.c.SLACK_CHANNEL);
  return changes[0];
}

for (const major of [7, 8]) {
  const { sdk } = MAJORS[major];
  for (const mode of ['reverse', 'forward']) {
    test(`@slack/web-api ${major} ${mode}: setCustomRetention is forwarded and audited`, async () => {
      await withWorld({}, async (w) => {
        const params = { channel_id: w.c.SLACK_CHANNEL, duration_days: 365 };
        const mark = await w.vendor.mark();
        const resp = await MAJORS[major].client(w, mode).admin.conversations.setCustomRetention(params);
        assert.equal(resp.ok, true);
        const recs = await w.vendor.since(mark);
        assert.equal(recs.length, 1, `want one request at the vendor, got ${recs.length}`);
        checkTransport(w, mode, recs[0], params);
        const ev = await w.proxy.waitEvent((e) => e.requestID === recs[0].requestId, `requestID ${recs[0].requestId}`);
        assert.equal(ev.httpStatus, 200);
        assert.equal(checkEvent(w, ev, major).new, 365);
      });
    });

    test(`@slack/web-api ${major} ${mode}: a refusal is a platform error restricted_action`, async () => {
      await withWorld({ extraConfig: GUARDRAIL }, async (w) => {
        const mark = await w.vendor.mark();
        const err = await MAJORS[major].client(w, mode).admin.conversations.setCustomRetention({
          channel_id: w.c.SLACK_CHANNEL, duration_days: 30,
        }).then(() => assert.fail('a call below min_days was not refused'), (e) => e);
        assert.equal(err.code, sdk.ErrorCode.PlatformError, `${err.code}: ${err.message}`);
        assert.equal(err.code, 'slack_webapi_platform_error');
        assert.equal(err.data.ok, false);
        assert.equal(err.data.error, 'restricted_action');
        assert.match(err.data.detail ?? '', /legal-hold-1y/);
        assert.deepEqual(await w.vendor.since(mark), [], 'a refused call reached the vendor');
        const ev = await w.proxy.waitEvent((e) => e.eventSource === 'slack.com', 'the refused Slack call');
        assert.equal(checkEvent(w, ev, major, { outcome: 'denied' }).new, 30);
        assert.equal(ev.guardrail.decision, 'deny');
        assert.deepEqual(ev.guardrail.ruleIds, ['legal-hold-1y']);
      });
    });
  }
}
