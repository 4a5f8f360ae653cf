// Against a running collector, only when told where it is:
//
//   SHUKEI_TEST_COLLECTOR_URL=http://127.0.0.1:8080 SHUKEI_TEST_COLLECTOR_TOKEN=... \
//   SHUKEI_TEST_TENANT_ID=acme-jp npm test
//
// SHUKEI_TEST_COLLECTOR_URL is the base URL; a trailing /v1/events is tolerated.

import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';

import { ShukeiClient, ShukeiError, type ShukeiOptions } from '../src/index.js';

const url = process.env.SHUKEI_TEST_COLLECTOR_URL;
const token = process.env.SHUKEI_TEST_COLLECTOR_TOKEN;
const tenantId = process.env.SHUKEI_TEST_TENANT_ID;
const skip =
  url && token && tenantId
    ? false
    : 'set SHUKEI_TEST_COLLECTOR_URL, SHUKEI_TEST_COLLECTOR_TOKEN and SHUKEI_TEST_TENANT_ID to run against a real collector';

interface Seen {
  status: number;
  results: { event_id: string; status: string; reason?: string; field?: string }[];
}

/** A client whose every reply from the collector is kept for the test to read. */
function connect(
  extra: Partial<ShukeiOptions> = {},
  rewrite?: (body: string) => string,
  before?: (input: string, init: RequestInit) => Promise<void>,
) {
  const seen: Seen[] = [];
  const errors: Error[] = [];
  const client = new ShukeiClient({
    endpoint: url!.replace(/\/v1\/events\/?$/, ''),
    token: token!,
    tenantId: tenantId!,
    source: 'sdk-js-integration',
    user: `u:${randomUUID()}`,
    pageLifecycle: false,
    maxRetries: 3,
    retryBaseMs: 200,
    closeTimeoutMs: 20_000,
    onError: (e) => errors.push(e),
    fetch: async (input, init) => {
      await before?.(input, init);
      const res = await fetch(input, rewrite ? { ...init, body: rewrite(String(init.body)) } : init);
      const body = await res.clone().text();
      let results: Seen['results'] = [];
      try {
        results = JSON.parse(body).results ?? [];
      } catch {
        // Not every status has a JSON body.
      }
      seen.push({ status: res.status, results });
      return res;
    },
    ...extra,
  });
  return { client, seen, errors };
}

describe('collector integration', () => {
  test('accepts one event of every user-level category', { skip }, async () => {
    const { client, seen, errors } = connect();
    const ids = [
      client.trackFeatureUse('app.record.create', 3, 3),
      client.trackAppAccess('1047', 'open'),
      client.trackSetting('notification.digest_frequency', 'weekly', false, 0),
      client.trackSetting('app.view.page_size', 50, true, 2),
      client.trackOperation('record.bulk_update', '1047', 'ok', randomBytes(16).toString('hex')),
      client.trackClientEnv({ client_kind: 'browser', browser: 'chrome' }),
    ];
    assert.ok(ids.every((id) => typeof id === 'string'), 'all pass the local checks');
    await client.close();
    assert.deepEqual(errors, []);
    const results = seen.flatMap((s) => s.results);
    assert.ok(seen.every((s) => s.status === 200), `statuses ${seen.map((s) => s.status)}`);
    for (const id of ids) {
      const r = results.find((x) => x.event_id === id);
      assert.equal(r?.status, 'accepted', `event ${id}: ${JSON.stringify(r)}`);
    }
    assert.equal(client.stats().sent, ids.length);
    assert.equal(client.stats().queued, 0);
  });

  test('a retry of an accepted event, same event_id, is acknowledged as accepted', { skip }, async () => {
    // The first reply is lost on the way back: the request goes out twice.
    let lost = false;
    const { client, seen, errors } = connect({}, undefined, async (input, init) => {
      if (!lost) {
        lost = true;
        await (await fetch(input, init)).arrayBuffer();
      }
    });
    const id = client.trackFeatureUse('app.record.create', 1, 0)!;
    await client.close();
    assert.ok(lost);
    assert.deepEqual(errors, []);
    const r = seen.flatMap((s) => s.results).find((x) => x.event_id === id);
    assert.equal(r?.status, 'accepted', JSON.stringify(r));
    assert.equal(client.stats().sent, 1);
  });

  test('an event the collector rejects is counted and not retried', { skip }, async () => {
    // Bypass the local checks the way a buggy or outdated client would.
    const { client, seen, errors } = connect({}, (body) => body.replace('"app.record.create"', '"App Record Create"'));
    const bad = client.trackFeatureUse('app.record.create', 1, 0)!;
    const good = client.trackFeatureUse('space.post.reaction', 1, 0)!;
    await client.close();
    assert.equal(seen.length, 1, 'one request, no retry');
    // A refusal as input data does not echo the event_id: match by index.
    const [r0, r1] = seen[0].results;
    assert.equal(r0?.status, 'rejected', JSON.stringify(r0));
    assert.ok(r0.event_id === undefined || r0.event_id === bad);
    assert.equal(r1?.event_id, good);
    assert.equal(r1?.status, 'accepted');
    assert.equal(client.stats().rejected, 1);
    assert.equal(client.stats().sent, 1);
    assert.ok(errors.some((e) => e instanceof ShukeiError && e.code === 'rejected'));
  });

  test('page hide without keepalive: the beacons sendBeacon would send are fully accepted (204)', { skip }, async (t) => {
    // A hidden page whose sendBeacon posts the Blob as a browser would: its
    // type as Content-Type, no other header.
    const doc = Object.assign(new EventTarget(), { visibilityState: 'hidden' });
    const win = new EventTarget();
    const g = globalThis as Record<string, unknown>;
    const saved = (['Request', 'navigator'] as const).map((k) => [k, Object.getOwnPropertyDescriptor(globalThis, k)] as const);
    const set = (k: string, value: unknown) => Object.defineProperty(globalThis, k, { value, configurable: true, writable: true });
    const posts: Promise<{ url: string; status: number; body: string }>[] = [];
    g.document = doc;
    g.addEventListener = win.addEventListener.bind(win);
    g.removeEventListener = win.removeEventListener.bind(win);
    set('Request', class {}); // no keepalive, as in old Firefox: everything goes by beacon
    set('navigator', {
      sendBeacon(u: string, data: Blob): boolean {
        posts.push(fetch(u, { method: 'POST', body: data }).then(async (r) => ({ url: u, status: r.status, body: await r.text() })));
        return true;
      },
    });
    t.after(() => {
      delete g.document;
      delete g.addEventListener;
      delete g.removeEventListener;
      for (const [k, d] of saved) {
        if (d) Object.defineProperty(globalThis, k, d);
        else delete g[k];
      }
    });

    const { client, seen, errors } = connect({ pageLifecycle: true, flushAt: 10_000 });
    for (let i = 0; i < 400; i++) client.trackFeatureUse('app.record.create', 1, 0);
    win.dispatchEvent(new Event('pagehide'));
    const answers = await Promise.all(posts);
    assert.ok(answers.length > 1, `400 events need more than one beacon; got ${answers.length}`);
    for (const a of answers) {
      assert.match(a.url, /\/v1\/beacon$/);
      assert.equal(a.status, 204, a.body);
    }
    assert.equal(seen.length, 0, 'nothing went by fetch');
    assert.equal(client.stats().sent, 400);
    await client.close();
    assert.deepEqual(errors, []);
  });

  test('a wrong token stops the client with an unauthorized error', { skip }, async () => {
    const { client, errors } = connect({ token: `${token}-not-valid` });
    client.trackFeatureUse('app.record.create', 1, 0);
    await client.flush();
    assert.ok(errors.some((e) => e instanceof ShukeiError && e.code === 'unauthorized'), errors.map((e) => e.message).join('; '));
    await client.close();
  });
});
