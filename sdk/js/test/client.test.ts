import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';

import { parseRetryAfter, ShukeiClient, ShukeiError, ShukeiValidationError, type ShukeiOptions } from '../src/index.js';
import { accepted, FakeClock, FakeCollector, reply, sleep, tick, waitFor } from './fake.js';

function make(fake: FakeCollector, extra: Partial<ShukeiOptions> = {}) {
  const errors: Error[] = [];
  const clock = new FakeClock();
  const c = new ShukeiClient({
    endpoint: 'https://collector.example/',
    token: 'ingest-token-1',
    tenantId: 'acme-jp',
    source: 'web-sdk',
    user: 'u:1',
    client: { os: 'linux', device_kind: 'desktop' },
    flushAt: 100,
    flushIntervalMs: 60_000,
    retryBaseMs: 100,
    closeTimeoutMs: 1000,
    pageLifecycle: false,
    fetch: fake.fetch,
    now: clock.now,
    random: () => 0,
    onError: (e) => errors.push(e),
    ...extra,
  });
  return { c, errors, clock };
}

const codes = (errors: Error[]) => errors.map((e) => (e instanceof ShukeiError ? e.code : (e as ShukeiValidationError).reason));

describe('request', () => {
  test('posts a JSON array with the bearer token to /v1/events', async () => {
    const fake = new FakeCollector();
    const { c } = make(fake);
    const id = c.trackFeatureUse('app.record.create', 3, 2);
    await c.flush();
    assert.equal(fake.calls.length, 1);
    const call = fake.calls[0];
    assert.equal(call.url, 'https://collector.example/v1/events');
    assert.equal(call.init.method, 'POST');
    assert.equal(call.headers['authorization'], 'Bearer ingest-token-1');
    assert.equal(call.headers['content-type'], 'application/json');
    assert.equal(call.init.credentials, 'omit');
    assert.equal(call.init.referrerPolicy, 'no-referrer');
    assert.ok(!call.url.includes('ingest-token-1'), 'the token never goes into the URL');
    assert.deepEqual(call.events, [
      {
        event_id: id,
        tenant_id: 'acme-jp',
        occurred_at: '2026-05-31T00:15:00.000Z',
        schema: 'feature_use/v1',
        source: 'web-sdk',
        user: 'u:1',
        client: { os: 'linux', device_kind: 'desktop' },
        data: { feature_id: 'app.record.create', count: 3, records_registered: 2 },
      },
    ]);
    assert.match(id!, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    await c.close();
  });

  test('refuses an endpoint with a query or credentials', () => {
    const fake = new FakeCollector();
    assert.throws(() => make(fake, { endpoint: 'https://collector.example/?token=x' }), /without query or credentials/);
    assert.throws(() => make(fake, { endpoint: 'https://u:p@collector.example/' }), /without query or credentials/);
    assert.throws(() => make(fake, { tenantId: 'Acme' }), /tenantId/);
    assert.throws(() => make(fake, { user: 'taro.yamada@example.co.jp' }), /opaque id/);
  });

  test('helpers build each category', async () => {
    const fake = new FakeCollector();
    const { c, errors } = make(fake);
    c.trackAppAccess('sales-pipeline', 'export');
    c.trackSetting('notification.digest_frequency', 'weekly', false, 0);
    c.trackOperation('record.bulk_update', '1047', 'ok', '4bf92f3577b34da6a3ce929d0e0e4736');
    c.trackClientEnv();
    c.trackTenantProfile(1250, 48);
    await c.flush();
    assert.deepEqual(errors, []);
    const evs = fake.calls[0].events;
    assert.deepEqual(
      evs.map((e) => [e.schema, e.data]),
      [
        ['app_access/v1', { app_id: 'sales-pipeline', action: 'export' }],
        ['settings/v1', { setting_key: 'notification.digest_frequency', value: 'weekly', customization_present: false, customization_count: 0 }],
        ['operation/v1', { operation_id: 'record.bulk_update', app_id: '1047', result_code: 'ok', request_id: '4bf92f3577b34da6a3ce929d0e0e4736' }],
        ['client_env/v1', { client_kind: 'api', browser: 'none' }],
        ['tenant_profile/v1', { user_count: 1250, organization_count: 48 }],
      ],
    );
    assert.equal(evs[4].user, undefined, 'tenant_profile carries no user');
    assert.equal(evs[4].client, undefined);
    await c.close();
  });
});

describe('batching', () => {
  test('sends when flushAt events are queued', async () => {
    const fake = new FakeCollector();
    const { c } = make(fake, { flushAt: 3 });
    c.trackFeatureUse('a', 1, 0);
    c.trackFeatureUse('b', 1, 0);
    await tick();
    assert.equal(fake.calls.length, 0);
    c.trackFeatureUse('c', 1, 0);
    await c.flush();
    assert.equal(fake.calls.length, 1);
    assert.deepEqual(
      fake.calls[0].events.map((e) => (e.data as { feature_id: string }).feature_id),
      ['a', 'b', 'c'],
    );
    assert.equal(c.stats().sent, 3);
    await c.close();
  });

  test('sends after flushIntervalMs', async () => {
    // Real timers, but only ever asserted in the direction timers keep: never early.
    const interval = 150;
    const fake = new FakeCollector();
    const at: number[] = [];
    fake.fallback = (evs) => (at.push(performance.now()), accepted(evs, fake.calls[0]));
    const { c } = make(fake, { flushIntervalMs: interval });
    const start = performance.now();
    c.trackFeatureUse('a', 1, 0);
    c.trackFeatureUse('b', 1, 0);
    await waitFor(() => fake.calls.length === 1);
    assert.ok(at[0] - start >= interval - 1, `sent after ${at[0] - start} ms`);
    assert.equal(fake.calls[0].events.length, 2);
    assert.equal(c.stats().sent, 2);
    // The timer runs again only when there is something to send.
    await sleep(2 * interval);
    assert.equal(fake.calls.length, 1);
    const again = performance.now();
    c.trackFeatureUse('c', 1, 0);
    await waitFor(() => fake.calls.length === 2);
    assert.ok(at[1] - again >= interval - 1);
    await c.close();
  });

  test('splits a large queue into requests of at most maxBatch events', async () => {
    const fake = new FakeCollector();
    const { c } = make(fake, { flushAt: 10_000 });
    for (let i = 0; i < 2500; i++) c.trackFeatureUse('app.record.create', 1, 0);
    await c.flush();
    assert.deepEqual(
      fake.calls.map((call) => call.events.length),
      [1000, 1000, 500],
    );
    for (const call of fake.calls) assert.ok(call.body.length <= 1 << 20);
    assert.equal(c.stats().sent, 2500);
    await c.close();
  });
});

describe('retries', () => {
  test('503 with Retry-After: the whole batch again, same event ids, not before Retry-After', async () => {
    const fake = new FakeCollector(() => ({ status: 503, headers: { 'Retry-After': '2' } }));
    const { c, clock } = make(fake);
    const ids = [c.trackFeatureUse('a', 1, 0), c.trackFeatureUse('b', 1, 0)];
    await c.flush();
    assert.equal(fake.calls.length, 1);
    assert.deepEqual(c.stats(), { queued: 2, inFlight: 0, sent: 0, rejected: 0, dropped: 0, retried: 2, failed: 0, invalid: 0 });

    await c.flush();
    clock.advance(1999);
    await c.flush();
    assert.equal(fake.calls.length, 1, 'no request while the collector asked to wait');

    clock.advance(1);
    await c.flush();
    assert.equal(fake.calls.length, 2);
    assert.deepEqual(fake.ids(), [ids, ids]);
    assert.equal(fake.calls[1].body, fake.calls[0].body, 'a retry sends the very same events');
    assert.equal(c.stats().sent, 2);
    assert.equal(c.stats().queued, 0);
    await c.close();
  });

  test('429 and network errors back off exponentially', async () => {
    const fake = new FakeCollector(
      () => ({ status: 429 }),
      () => new TypeError('fetch failed'),
      () => ({ status: 502 }),
    );
    const { c, clock } = make(fake, { retryBaseMs: 100, random: () => 0.5 });
    const id = c.trackFeatureUse('a', 1, 0);
    await c.flush();
    // Equal jitter: half the exponential step, plus random times the other half.
    for (const wait of [75, 150, 300]) {
      clock.advance(wait - 1);
      await c.flush();
      const before = fake.calls.length;
      clock.advance(1);
      await c.flush();
      assert.equal(fake.calls.length, before + 1, `retry after ${wait} ms`);
    }
    assert.deepEqual(fake.ids(), [[id], [id], [id], [id]]);
    assert.equal(c.stats().sent, 1);
    assert.equal(c.stats().retried, 3);
    await c.close();
  });

  test('retry results go again with the same event id; rejected ones never do', async () => {
    const fake = new FakeCollector((evs) => ({
      status: 200,
      body: reply(evs, (_, i) => (['accepted', 'retry', 'rejected'] as const)[i]),
    }));
    const { c, clock, errors } = make(fake);
    const ids = ['a', 'b', 'c'].map((f) => c.trackFeatureUse(f, 1, 0)!);
    await c.flush();
    clock.advance(60_000);
    await c.flush();
    clock.advance(60_000);
    await c.flush();
    assert.deepEqual(fake.ids(), [ids, [ids[1]]]);
    assert.deepEqual(c.stats(), { queued: 0, inFlight: 0, sent: 2, rejected: 1, dropped: 0, retried: 1, failed: 0, invalid: 0 });
    assert.deepEqual(codes(errors), ['rejected']);
    const err = errors[0] as ShukeiError;
    assert.deepEqual(err.eventIds, [ids[2]]);
    assert.deepEqual(err.reasons, { 'invalid_field at data.feature_id': 1 });
  });

  test('503 with results: rejected events stay rejected, the rest waits for Retry-After', async () => {
    const fake = new FakeCollector((evs) => ({
      status: 503,
      headers: { 'Retry-After': '2' },
      body: reply(evs, (_, i) => (i === 0 ? 'rejected' : 'retry')),
    }));
    const { c, clock } = make(fake);
    const ids = ['a', 'b'].map((f) => c.trackFeatureUse(f, 1, 0)!);
    await c.flush();
    clock.advance(1999);
    await c.flush();
    assert.equal(fake.calls.length, 1);
    clock.advance(1);
    await c.flush();
    assert.deepEqual(fake.ids(), [ids, [ids[1]]]);
    assert.deepEqual(c.stats(), { queued: 0, inFlight: 0, sent: 1, rejected: 1, dropped: 0, retried: 1, failed: 0, invalid: 0 });
  });

  test('a result without event_id, as for input data, is matched by index', async () => {
    const fake = new FakeCollector((evs) => ({
      status: 200,
      body: {
        accepted: 1,
        rejected: 1,
        retry: 0,
        results: [
          { index: 0, status: 'rejected', reason: 'input_data.personal_name', field: 'data.feature_id' },
          { index: 1, event_id: evs[1].event_id, status: 'accepted' },
        ],
      },
    }));
    const { c, errors } = make(fake);
    const ids = ['taro.yamada', 'app.record.create'].map((f) => c.trackFeatureUse(f, 1, 0)!);
    await c.flush();
    assert.deepEqual(c.stats(), { queued: 0, inFlight: 0, sent: 1, rejected: 1, dropped: 0, retried: 0, failed: 0, invalid: 0 });
    assert.deepEqual((errors[0] as ShukeiError).eventIds, [ids[0]]);
    assert.deepEqual((errors[0] as ShukeiError).reasons, { 'input_data.personal_name at data.feature_id': 1 });
  });

  test('a reply without results is retried, since the ids make it safe', async () => {
    const fake = new FakeCollector(() => ({ status: 200, body: 'not the reply' }));
    const { c, clock } = make(fake);
    const id = c.trackFeatureUse('a', 1, 0);
    await c.flush();
    clock.advance(1000);
    await c.flush();
    assert.deepEqual(fake.ids(), [[id], [id]]);
    assert.equal(c.stats().sent, 1);
  });

  test('gives up after maxRetries', async () => {
    const fake = new FakeCollector();
    fake.fallback = () => ({ status: 503 });
    const { c, clock, errors } = make(fake, { maxRetries: 2 });
    c.trackFeatureUse('a', 1, 0);
    for (let i = 0; i < 5; i++) {
      await c.flush();
      clock.advance(60_000);
    }
    assert.equal(fake.calls.length, 3);
    assert.deepEqual(c.stats(), { queued: 0, inFlight: 0, sent: 0, rejected: 0, dropped: 0, retried: 2, failed: 1, invalid: 0 });
    assert.deepEqual(codes(errors), ['gave_up']);
  });

  test('413 splits the batch and sends the halves', async () => {
    const fake = new FakeCollector();
    fake.fallback = (evs) => (evs.length > 2 ? { status: 413 } : accepted(evs, fake.calls[fake.calls.length - 1]));
    const { c } = make(fake);
    const ids = ['a', 'b', 'c', 'd', 'e'].map((f) => c.trackFeatureUse(f, 1, 0)!);
    await c.flush();
    assert.deepEqual(fake.ids(), [ids, ids.slice(0, 3), ids.slice(0, 2), [ids[2]], ids.slice(3)]);
    assert.deepEqual(c.stats(), { queued: 0, inFlight: 0, sent: 5, rejected: 0, dropped: 0, retried: 0, failed: 0, invalid: 0 });
  });

  test('413 on a single event rejects it', async () => {
    const fake = new FakeCollector(() => ({ status: 413 }));
    const { c, errors } = make(fake);
    c.trackFeatureUse('a', 1, 0);
    await c.flush();
    assert.equal(c.stats().rejected, 1);
    assert.deepEqual(codes(errors), ['http_error']);
  });

  test('401 stops sending and reports the token', async () => {
    const fake = new FakeCollector(() => ({ status: 401 }));
    const { c, clock, errors } = make(fake);
    c.trackFeatureUse('a', 1, 0);
    await c.flush();
    clock.advance(3_600_000);
    c.trackFeatureUse('b', 1, 0);
    await c.flush();
    assert.equal(fake.calls.length, 1);
    assert.deepEqual(codes(errors), ['unauthorized']);
    assert.equal(c.stats().queued, 2);
    await c.close();
    assert.equal(c.stats().failed, 2);
    assert.equal(fake.calls.length, 1);
  });

  test('another 4xx drops the batch as rejected', async () => {
    const fake = new FakeCollector(() => ({ status: 400 }));
    const { c, clock, errors } = make(fake);
    c.trackFeatureUse('a', 1, 0);
    c.trackFeatureUse('b', 1, 0);
    await c.flush();
    clock.advance(60_000);
    await c.flush();
    assert.equal(fake.calls.length, 1);
    assert.equal(c.stats().rejected, 2);
    assert.deepEqual(codes(errors), ['http_error']);
    assert.equal((errors[0] as ShukeiError).status, 400);
  });

  test('parseRetryAfter reads seconds and HTTP dates', () => {
    const now = Date.parse('2026-05-31T00:00:00Z');
    assert.equal(parseRetryAfter('120', now), 120_000);
    assert.equal(parseRetryAfter('Sun, 31 May 2026 00:00:30 GMT', now), 30_000);
    assert.equal(parseRetryAfter(null, now), undefined);
    assert.equal(parseRetryAfter('soon', now), undefined);
  });
});

describe('bounded memory', () => {
  test('a full queue drops the oldest events and counts them', async () => {
    const fake = new FakeCollector();
    const { c, errors } = make(fake, { maxQueue: 3 });
    const ids = ['a', 'b', 'c', 'd', 'e'].map((f) => c.trackFeatureUse(f, 1, 0)!);
    assert.deepEqual(c.stats(), { queued: 3, inFlight: 0, sent: 0, rejected: 0, dropped: 2, retried: 0, failed: 0, invalid: 0 });
    assert.deepEqual(codes(errors), ['dropped'], 'reported once, not once an event');
    await c.flush();
    assert.deepEqual(fake.ids(), [ids.slice(2)]);
  });

  test('events waiting for a retry count against maxQueue too', async () => {
    const fake = new FakeCollector(() => ({ status: 503 }));
    const { c, clock } = make(fake, { maxQueue: 2 });
    const first = c.trackFeatureUse('a', 1, 0)!;
    await c.flush();
    const later = ['b', 'c'].map((f) => c.trackFeatureUse(f, 1, 0)!);
    assert.equal(c.stats().dropped, 1);
    clock.advance(60_000);
    await c.flush();
    assert.deepEqual(fake.ids(), [[first], later]);
  });
});

describe('close', () => {
  test('flushes what is queued and stops', async () => {
    const fake = new FakeCollector();
    const { c, errors } = make(fake, { flushIntervalMs: 20 });
    c.trackFeatureUse('a', 1, 0);
    c.trackFeatureUse('b', 1, 0);
    await c.close();
    assert.equal(fake.calls.length, 1);
    assert.equal(c.stats().sent, 2);
    assert.equal(c.trackFeatureUse('c', 1, 0), undefined);
    await sleep(50);
    assert.equal(fake.calls.length, 1, 'no timer after close');
    assert.deepEqual(codes(errors), ['closed']);
  });

  test('retries during close as the collector allows', async () => {
    const fake = new FakeCollector(() => ({ status: 503, headers: { 'Retry-After': '0' } }));
    const { c } = make(fake, { retryBaseMs: 10 });
    const id = c.trackFeatureUse('a', 1, 0);
    await c.close();
    assert.deepEqual(fake.ids(), [[id], [id]]);
    assert.equal(c.stats().sent, 1);
  });

  test('counts what it could not deliver in time as failed', async () => {
    const fake = new FakeCollector(() => ({ status: 503, headers: { 'Retry-After': '3600' } }));
    const { c, errors } = make(fake);
    c.trackFeatureUse('a', 1, 0);
    await c.close();
    assert.equal(fake.calls.length, 1);
    assert.equal(c.stats().failed, 1);
    assert.deepEqual(codes(errors), ['gave_up']);
  });
});

describe('local checks', () => {
  const cases: [string, (c: ShukeiClient) => unknown, string, string][] = [
    ['id pattern', (c) => c.trackFeatureUse('App Record', 1, 0), 'invalid_field', 'data.feature_id'],
    ['email as id', (c) => c.trackAppAccess('taro.yamada@example.co.jp', 'open'), 'invalid_field', 'data.app_id'],
    ['count below range', (c) => c.trackFeatureUse('app.record.create', 0, 0), 'out_of_range', 'data.count'],
    ['count above range', (c) => c.trackFeatureUse('app.record.create', 1_000_001, 0), 'out_of_range', 'data.count'],
    ['fraction', (c) => c.trackFeatureUse('app.record.create', 1.5, 0), 'wrong_type', 'data.count'],
    ['NaN', (c) => c.trackFeatureUse('app.record.create', NaN, 0), 'wrong_type', 'data.count'],
    ['unknown schema', (c) => c.track('page_view/v1' as 'feature_use/v1', { feature_id: 'a', count: 1, records_registered: 0 }), 'unknown_schema', 'schema'],
    ['next version', (c) => c.track('feature_use/v2' as 'feature_use/v1', { feature_id: 'a', count: 1, records_registered: 0 }), 'unknown_schema', 'schema'],
    ['unknown field', (c) => c.track('feature_use/v1', { feature_id: 'a', count: 1, records_registered: 0, subject: 'Re: 見積もり' } as never), 'unknown_field', 'data.*'],
    ['action', (c) => c.trackAppAccess('1047', 'download' as 'open'), 'invalid_field', 'data.action'],
    ['setting text', (c) => c.trackSetting('user.signature', 'Best regards, Taro', true, 1), 'invalid_field', 'data.value'],
    ['setting fraction', (c) => c.trackSetting('app.view.page_size', 0.5, true, 1), 'wrong_type', 'data.value'],
    ['customisation', (c) => c.trackSetting('user.locale', 'ja', false, 3), 'inconsistent_fields', 'data.customization_count'],
    ['request id', (c) => c.trackOperation('file.upload', '1047', 'ok', '4BF92F3577B34DA6A3CE929D0E0E4736'), 'invalid_field', 'data.request_id'],
    ['result code', (c) => c.trackOperation('file.upload', '1047', 'HTTP 500', '4bf92f3577b34da6a3ce929d0e0e4736'), 'invalid_field', 'data.result_code'],
    ['user name', (c) => c.trackFeatureUse('app.record.create', 1, 0, { user: 'taro.yamada' }), 'invalid_field', 'user'],
    ['user on tenant_profile', (c) => c.trackTenantProfile(10, 1, { user: 'u:1' }), 'forbidden_field', 'user'],
    ['os version text', (c) => c.trackFeatureUse('a', 1, 0, { client: { os: 'macos', os_version: '14.4-beta', device_kind: 'desktop' } }), 'invalid_field', 'client.os_version'],
    ['bad time', (c) => c.trackFeatureUse('a', 1, 0, { occurredAt: NaN }), 'invalid_timestamp', 'occurred_at'],
  ];
  for (const [name, fn, reason, field] of cases) {
    test(`refuses ${name} before queuing`, async () => {
      const fake = new FakeCollector();
      const { c, errors } = make(fake);
      assert.equal(fn(c), undefined);
      assert.equal(errors.length, 1);
      const err = errors[0];
      assert.ok(err instanceof ShukeiValidationError);
      assert.equal(err.reason, reason);
      assert.equal(err.field, field);
      await c.flush();
      assert.equal(fake.calls.length, 0);
      assert.equal(c.stats().invalid, 1);
      assert.equal(c.stats().queued, 0);
    });
  }

  test('the error message never quotes the value', () => {
    const fake = new FakeCollector();
    const { c, errors } = make(fake);
    c.trackFeatureUse('taro.yamada@example.co.jp', 1, 0);
    c.track('feature_use/v1', { feature_id: 'a', count: 1, records_registered: 0, 山田太郎: 1 } as never);
    assert.equal(errors.length, 2);
    for (const e of errors) {
      assert.doesNotMatch(e.message, /yamada|山田/);
    }
  });

  test('a user-level event needs a user', () => {
    const fake = new FakeCollector();
    const { c, errors } = make(fake, { user: undefined });
    assert.equal(c.trackFeatureUse('a', 1, 0), undefined);
    assert.equal((errors[0] as ShukeiValidationError).reason, 'missing_field');
    c.setUser('3f1c9a52-7b0e-4d6e-9a51-2c8e4f0b7d13');
    assert.ok(c.trackFeatureUse('a', 1, 0));
    assert.throws(() => c.setUser('Taro Yamada'), /opaque id/);
  });

  test('a queued event does not change with the caller’s object', async () => {
    const fake = new FakeCollector();
    const { c } = make(fake);
    const data = { feature_id: 'a', count: 1, records_registered: 0 };
    c.track('feature_use/v1', data);
    data.feature_id = 'Changed Later';
    await c.flush();
    assert.equal((fake.calls[0].events[0].data as typeof data).feature_id, 'a');
  });
});

describe('page lifecycle', () => {
  test('a hidden page sends what is queued with keepalive and the Authorization header', async (t) => {
    const doc = new EventTarget() as EventTarget & { visibilityState: string };
    doc.visibilityState = 'visible';
    const win = new EventTarget();
    const g = globalThis as Record<string, unknown>;
    g.document = doc;
    g.addEventListener = win.addEventListener.bind(win);
    g.removeEventListener = win.removeEventListener.bind(win);
    t.after(() => {
      delete g.document;
      delete g.addEventListener;
      delete g.removeEventListener;
    });

    const fake = new FakeCollector();
    const { c } = make(fake, { pageLifecycle: true });
    c.trackFeatureUse('a', 1, 0);
    doc.dispatchEvent(new Event('visibilitychange'));
    await tick();
    assert.equal(fake.calls.length, 0, 'still visible');

    doc.visibilityState = 'hidden';
    doc.dispatchEvent(new Event('visibilitychange'));
    await tick();
    assert.equal(fake.calls.length, 1);
    assert.equal(fake.calls[0].init.keepalive, true);
    assert.equal(fake.calls[0].headers['authorization'], 'Bearer ingest-token-1');
    assert.ok(!fake.calls[0].url.includes('?'));

    c.trackFeatureUse('b', 1, 0);
    win.dispatchEvent(new Event('pagehide'));
    await tick();
    assert.equal(fake.calls.length, 2);
    assert.equal(fake.calls[1].init.keepalive, true);

    await c.close();
    c.trackFeatureUse('c', 1, 0);
    win.dispatchEvent(new Event('pagehide'));
    await tick();
    assert.equal(fake.calls.length, 2, 'listeners are gone after close');
  });

  test('a keepalive request stays under the browsers’ 64 KiB budget', async (t) => {
    const doc = new EventTarget() as EventTarget & { visibilityState: string };
    doc.visibilityState = 'hidden';
    const win = new EventTarget();
    const g = globalThis as Record<string, unknown>;
    g.document = doc;
    g.addEventListener = win.addEventListener.bind(win);
    g.removeEventListener = win.removeEventListener.bind(win);
    t.after(() => {
      delete g.document;
      delete g.addEventListener;
      delete g.removeEventListener;
    });
    const fake = new FakeCollector();
    const { c } = make(fake, { pageLifecycle: true, flushAt: 10_000 });
    for (let i = 0; i < 1000; i++) c.trackFeatureUse('app.record.create', 1, 0);
    win.dispatchEvent(new Event('pagehide'));
    await tick();
    assert.equal(fake.calls.length, 1);
    assert.ok(fake.calls[0].body.length <= 64 << 10);
    assert.ok(fake.calls[0].events.length > 50);
    await c.flush();
    await waitFor(() => c.stats().queued === 0);
    assert.equal(c.stats().sent, 1000, 'the rest goes normally if the page lives on');
    assert.equal(fake.calls[1].init.keepalive, false, 'too large for the keepalive budget');
    c.trackFeatureUse('app.record.create', 1, 0);
    await c.flush();
    assert.equal(fake.calls[2].init.keepalive, true, 'small requests in a page always use keepalive');
    await c.close();
  });
});

interface SentBeacon {
  url: string;
  data: Blob;
}

/**
 * A hidden page for the SDK: document and window events, and on request a
 * navigator.sendBeacon answering `beacon(i)` to the i-th call (true: queued,
 * false: refused, 'throw') and a Request without keepalive, as in old Firefox.
 * Call before making the client.
 */
function fakePage(t: TestContext, opts: { keepalive?: boolean; beacon?: (i: number) => boolean | 'throw' } = {}) {
  const doc = new EventTarget() as EventTarget & { visibilityState: string };
  doc.visibilityState = 'hidden';
  const win = new EventTarget();
  const g = globalThis as Record<string, unknown>;
  g.document = doc;
  g.addEventListener = win.addEventListener.bind(win);
  g.removeEventListener = win.removeEventListener.bind(win);
  const saved = (['Request', 'navigator'] as const).map((k) => [k, Object.getOwnPropertyDescriptor(globalThis, k)] as const);
  const set = (k: string, value: unknown) => Object.defineProperty(globalThis, k, { value, configurable: true, writable: true });
  if (opts.keepalive === false) set('Request', class {});
  const beacons: SentBeacon[] = [];
  const answer = opts.beacon;
  if (answer) {
    set('navigator', {
      sendBeacon(url: string, data: Blob): boolean {
        const a = answer(beacons.length);
        beacons.push({ url, data });
        if (a === 'throw') throw new TypeError('beacon refused');
        return a;
      },
    });
  }
  t.after(() => {
    delete g.document;
    delete g.addEventListener;
    delete g.removeEventListener;
    for (const [k, d] of saved) {
      if (d) Object.defineProperty(globalThis, k, d);
      else delete g[k];
    }
  });
  return { win, beacons };
}

async function readBeacon(b: SentBeacon): Promise<{ token: string; events: { event_id: string }[] }> {
  return JSON.parse(await b.data.text());
}

describe('page hide with sendBeacon', () => {
  test('without keepalive: beacons to /v1/beacon, text/plain, token in the body, each under 60 KiB', async (t) => {
    const { win, beacons } = fakePage(t, { keepalive: false, beacon: () => true });
    const fake = new FakeCollector();
    const { c } = make(fake, { pageLifecycle: true, flushAt: 10_000 });
    const ids: string[] = [];
    for (let i = 0; i < 1000; i++) ids.push(c.trackFeatureUse('app.record.create', 1, 0)!);
    win.dispatchEvent(new Event('pagehide'));
    await tick();

    assert.equal(fake.calls.length, 0, 'no fetch: it could be cut on unload');
    assert.ok(beacons.length > 1, `one beacon cannot hold 1000 events; got ${beacons.length}`);
    const sent: string[] = [];
    for (const b of beacons) {
      assert.equal(b.url, 'https://collector.example/v1/beacon');
      assert.ok(!b.url.includes('?') && !b.url.includes('ingest-token-1'), 'no token in the URL');
      assert.equal(b.data.type, 'text/plain;charset=utf-8'); // Blob lower-cases its type
      assert.ok(b.data.size <= 60 << 10, `beacon of ${b.data.size} bytes`);
      const body = await readBeacon(b);
      assert.deepEqual(Object.keys(body).sort(), ['events', 'token']);
      assert.equal(body.token, 'ingest-token-1');
      assert.ok(body.events.length > 0);
      sent.push(...body.events.map((e) => e.event_id));
    }
    assert.ok(beacons.slice(0, -1).every((b) => b.data.size > 50 << 10), 'beacons are filled before a new one starts');
    assert.deepEqual(sent, ids, 'every event once, in order');
    assert.equal(c.stats().sent, 1000);
    assert.equal(c.stats().queued, 0);
    await c.close();
  });

  test('events leave the queue only when sendBeacon returned true', async (t) => {
    // The browser queues the first beacon, then its budget is used up.
    const { win, beacons } = fakePage(t, { keepalive: false, beacon: (i) => i === 0 });
    const fake = new FakeCollector();
    const { c } = make(fake, { pageLifecycle: true, flushAt: 10_000 });
    const ids: string[] = [];
    for (let i = 0; i < 1000; i++) ids.push(c.trackFeatureUse('app.record.create', 1, 0)!);
    win.dispatchEvent(new Event('pagehide'));
    await tick();

    assert.equal(beacons.length, 2, 'no more beacons after a refusal');
    const first = (await readBeacon(beacons[0])).events.map((e) => e.event_id);
    const refused = (await readBeacon(beacons[1])).events.map((e) => e.event_id);
    assert.equal(c.stats().sent, first.length);
    assert.equal(c.stats().queued, 1000 - first.length);
    assert.equal(fake.calls.length, 0);

    // The page lives on: the rest, the refused beacon's events first, goes
    // by fetch, and nothing the browser took goes twice.
    await c.flush();
    const fetched = fake.calls.flatMap((call) => call.events.map((e) => e.event_id));
    assert.deepEqual(fetched.slice(0, refused.length), refused);
    assert.deepEqual([...first, ...fetched], ids);
    assert.equal(c.stats().sent, 1000);
    await c.close();
  });

  test('a sendBeacon that throws leaves the events queued', async (t) => {
    const { win, beacons } = fakePage(t, { keepalive: false, beacon: () => 'throw' });
    const fake = new FakeCollector();
    const errors: Error[] = [];
    const { c } = make(fake, { pageLifecycle: true, onError: (e) => errors.push(e) });
    c.trackFeatureUse('a', 1, 0);
    win.dispatchEvent(new Event('pagehide'));
    await tick();
    assert.equal(beacons.length, 1);
    assert.equal(c.stats().queued, 1);
    assert.equal(c.stats().sent, 0);
    await c.close();
    assert.equal(c.stats().sent, 1, 'sent by close() instead');
    assert.deepEqual(errors, []);
  });

  test('with keepalive: keepalive first, with the Authorization header; beacons only for what does not fit', async (t) => {
    const { win, beacons } = fakePage(t, { beacon: () => true });
    const fake = new FakeCollector();
    const { c } = make(fake, { pageLifecycle: true, flushAt: 10_000 });

    c.trackFeatureUse('a', 1, 0);
    win.dispatchEvent(new Event('pagehide'));
    await tick();
    assert.equal(fake.calls.length, 1);
    assert.equal(fake.calls[0].init.keepalive, true);
    assert.equal(fake.calls[0].headers['authorization'], 'Bearer ingest-token-1');
    assert.equal(beacons.length, 0, 'a queue that fits keepalive needs no beacon');
    await waitFor(() => c.stats().queued === 0);

    const ids: string[] = [];
    for (let i = 0; i < 1000; i++) ids.push(c.trackFeatureUse('app.record.create', 1, 0)!);
    win.dispatchEvent(new Event('pagehide'));
    await tick();
    assert.equal(fake.calls.length, 2);
    assert.equal(fake.calls[1].init.keepalive, true);
    assert.ok(beacons.length > 0, 'the rest goes by beacon');
    const keepalive = fake.calls[1].events.map((e) => e.event_id);
    const beaconed: string[] = [];
    for (const b of beacons) beaconed.push(...(await readBeacon(b)).events.map((e) => e.event_id));
    assert.deepEqual([...keepalive, ...beaconed], ids, 'every event once');
    await waitFor(() => c.stats().queued === 0);
    assert.equal(c.stats().sent, 1001);
    await c.close();
  });
});

describe('stats', () => {
  test('every tracked event is queued, sent, rejected, dropped or failed', async () => {
    let n = 0;
    const fake = new FakeCollector();
    fake.fallback = (evs) => ({ status: 200, body: reply(evs, () => (['accepted', 'rejected', 'retry'] as const)[n++ % 3]) });
    const { c, clock } = make(fake, { maxQueue: 50, maxRetries: 1, flushAt: 7 });
    let tracked = 0;
    for (let i = 0; i < 200; i++) {
      if (c.trackFeatureUse('a', 1, 0)) tracked++;
      if (i % 10 === 0) clock.advance(1000);
      await tick();
    }
    await c.flush();
    const s = c.stats();
    assert.equal(s.queued + s.sent + s.rejected + s.dropped + s.failed, tracked);
    assert.ok(s.sent > 0 && s.rejected > 0 && s.retried > 0);
    await c.close();
  });
});
