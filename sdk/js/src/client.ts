import { detectClient, detectClientEnv, detectClientSync } from './environment.js';
import {
  isId,
  isTenantLevel,
  isUserId,
  MAX_EVENT_BYTES,
  ShukeiValidationError,
  validateClient,
  validateEvent,
  type Action,
  type Client,
  type ClientEnvData,
  type DataBySchema,
  type Schema,
  type SettingValue,
  type ShukeiEvent,
} from './schema.js';

export interface ShukeiOptions {
  /** Base URL of the collector; events go to `{endpoint}/v1/events`. */
  endpoint: string;
  /**
   * Ingest token, sent in the Authorization header, or in the body of a
   * page-hide beacon (which cannot carry headers); never in a URL.
   */
  token: string;
  tenantId: string;
  /** Id of this collector, e.g. `web-sdk`. */
  source: string;
  /** Opaque id of the acting user; never a name, login or email. */
  user?: string;
  /** Fixes the envelope's client instead of detecting it. */
  client?: Client;
  /** Send as soon as this many events are queued. */
  flushAt?: number;
  /** Send queued events at most this long after they were tracked. */
  flushIntervalMs?: number;
  /** Events held in memory at most; beyond it the oldest are dropped. */
  maxQueue?: number;
  /** Events per request, at most the collector's 1000. */
  maxBatch?: number;
  /** How often one event is sent again before it is given up. */
  maxRetries?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  requestTimeoutMs?: number;
  /** How long close() keeps trying to deliver what is left. */
  closeTimeoutMs?: number;
  /**
   * In a browser: flush when the page is hidden or left, and send requests
   * that fit the browser's budget with keepalive, the rest of a page hide
   * with navigator.sendBeacon. Default true.
   */
  pageLifecycle?: boolean;
  fetch?: (input: string, init: RequestInit) => Promise<Response>;
  /** Clock in milliseconds since the epoch, for timestamps and backoff. */
  now?: () => number;
  /** Source of jitter in [0, 1). */
  random?: () => number;
  onError?: (err: Error) => void;
}

export interface TrackOptions {
  user?: string;
  client?: Client;
  occurredAt?: Date | number;
}

export interface Stats {
  /** Tracked and not yet settled, including those in flight. */
  queued: number;
  inFlight: number;
  /** Accepted by the collector, or handed to sendBeacon (whose reply is never seen). */
  sent: number;
  /** Refused by the collector; never sent again. */
  rejected: number;
  /** Pushed out of a full queue, or tracked after close(). */
  dropped: number;
  /** Times an event was queued again after a retryable failure. */
  retried: number;
  /** Given up after maxRetries, or left over at close(). */
  failed: number;
  /** Refused by the local checks before queuing. */
  invalid: number;
}

export type ShukeiErrorCode = 'rejected' | 'unauthorized' | 'http_error' | 'gave_up' | 'dropped' | 'closed';

/** A delivery problem. Messages carry counts, reasons and event ids, never event values. */
export class ShukeiError extends Error {
  readonly code: ShukeiErrorCode;
  readonly status?: number;
  readonly eventIds: string[];
  /** Collector reasons with their counts, for `rejected`. */
  readonly reasons: Record<string, number>;
  constructor(code: ShukeiErrorCode, message: string, extra: { status?: number; eventIds?: string[]; reasons?: Record<string, number> } = {}) {
    super(`shukei: ${message}`);
    this.name = 'ShukeiError';
    this.code = code;
    this.status = extra.status;
    this.eventIds = extra.eventIds ?? [];
    this.reasons = extra.reasons ?? {};
  }
}

/** The collector's limits on one request. */
export const MAX_BATCH = 1000;
export const MAX_BODY_BYTES = 1 << 20;
// Browsers cap the bodies of all in-flight keepalive requests of a page at
// 64 KiB together; leave room for a request another script may have made.
const KEEPALIVE_BYTES = 48 << 10;
// sendBeacon bodies are held to the same 64 KiB by browsers; stay under it
// with the token and the wrapping included.
const BEACON_BYTES = 60 << 10;
// A CORS-safelisted type: the browser sends the beacon without a preflight,
// which a page being unloaded has no time for.
const BEACON_TYPE = 'text/plain;charset=UTF-8';

interface Pending {
  ev: ShukeiEvent;
  attempts: number;
  /** The client was detected, and may be refined until the event is first sent. */
  autoClient: boolean;
  json?: string;
}

interface ResultItem {
  index?: number;
  event_id?: string;
  status?: string;
  reason?: string;
  field?: string;
}

type Timer = ReturnType<typeof setTimeout>;

// Not unref'd: a Node process awaiting close() must stay up for the retry.
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// A pending send must not keep a Node process alive; close() is the way to
// wait for delivery.
function unref(t: Timer): Timer {
  (t as { unref?: () => void }).unref?.();
  return t;
}

function newEventId(): string {
  const c = globalThis.crypto;
  if (typeof c.randomUUID === 'function') return c.randomUUID();
  // randomUUID exists only in secure contexts; a page served over plain HTTP
  // still has getRandomValues.
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Milliseconds from a Retry-After value (delta seconds or an HTTP date). */
export function parseRetryAfter(v: string | null, now: number): number | undefined {
  if (!v) return undefined;
  if (/^\s*[0-9]+\s*$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

export class ShukeiClient {
  private readonly url: string;
  private readonly beaconUrl: string;
  private readonly token: string;
  private readonly tenantId: string;
  private readonly source: string;
  private user: string | undefined;
  private client: Client;
  private readonly fixedClient: boolean;
  private readonly clientReady: Promise<void>;
  private readonly flushAt: number;
  private readonly flushIntervalMs: number;
  private readonly maxQueue: number;
  private readonly maxBatch: number;
  private readonly maxRetries: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  private readonly requestTimeoutMs: number;
  private readonly closeTimeoutMs: number;
  private readonly fetchFn: (input: string, init: RequestInit) => Promise<Response>;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly onError: (err: Error) => void;

  private queue: Pending[] = [];
  private inFlight = 0;
  private keepaliveBytes = 0;
  private counts = { sent: 0, rejected: 0, dropped: 0, retried: 0, failed: 0, invalid: 0 };
  private failures = 0;
  private retryAt = 0;
  private halted = false;
  private closed = false;
  private dropReported = false;
  private timer: Timer | undefined;
  private running: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private removeListeners: (() => void) | undefined;
  private inPage = false;
  private readonly keepaliveSupported = keepaliveSupported();
  private readonly hideSends = new Set<Promise<void>>();

  constructor(opts: ShukeiOptions) {
    const endpoint = new URL(opts.endpoint);
    if (endpoint.search || endpoint.hash || endpoint.username || endpoint.password) {
      // Credentials in URLs end up in proxy and server logs.
      throw new TypeError('shukei: endpoint must be a plain base URL, without query or credentials; pass the token as `token`');
    }
    this.url = endpoint.href.replace(/\/+$/, '') + '/v1/events';
    this.beaconUrl = endpoint.href.replace(/\/+$/, '') + '/v1/beacon';
    if (typeof opts.token !== 'string' || opts.token === '') throw new TypeError('shukei: token is required');
    if (!isId(opts.tenantId)) throw new TypeError('shukei: tenantId must match ^[a-z0-9][a-z0-9_.-]{0,63}$');
    if (!isId(opts.source)) throw new TypeError('shukei: source must match ^[a-z0-9][a-z0-9_.-]{0,63}$');
    if (opts.user !== undefined && !isUserId(opts.user)) throw new TypeError('shukei: user must be an opaque id, never a name or email');
    if (opts.client !== undefined) validateClient(opts.client);
    this.token = opts.token;
    this.tenantId = opts.tenantId;
    this.source = opts.source;
    this.user = opts.user;
    this.flushAt = positive('flushAt', opts.flushAt, 100);
    this.flushIntervalMs = positive('flushIntervalMs', opts.flushIntervalMs, 5000);
    this.maxQueue = positive('maxQueue', opts.maxQueue, 10_000);
    this.maxBatch = Math.min(MAX_BATCH, positive('maxBatch', opts.maxBatch, MAX_BATCH));
    this.maxRetries = positive('maxRetries', opts.maxRetries, 10, true);
    this.retryBaseMs = positive('retryBaseMs', opts.retryBaseMs, 1000);
    this.retryMaxMs = positive('retryMaxMs', opts.retryMaxMs, 60_000);
    this.requestTimeoutMs = positive('requestTimeoutMs', opts.requestTimeoutMs, 30_000);
    this.closeTimeoutMs = positive('closeTimeoutMs', opts.closeTimeoutMs, 10_000, true);
    const f = opts.fetch ?? globalThis.fetch?.bind(globalThis);
    if (!f) throw new TypeError('shukei: no fetch in this runtime; pass one as `fetch`');
    this.fetchFn = f;
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.onError = opts.onError ?? ((err) => globalThis.console?.warn(err.message));

    this.fixedClient = opts.client !== undefined;
    this.client = opts.client ?? detectClientSync();
    // Bounded: a browser that never answers the hints must not hold up delivery.
    this.clientReady = this.fixedClient
      ? Promise.resolve()
      : Promise.race([
          detectClient()
            .then((c) => {
              validateClient(c);
              this.client = c;
            })
            .catch(() => {
              // Keep the first answer; a wrong guess here must not stop delivery.
            }),
          new Promise<void>((r) => unref(setTimeout(r, 1000))),
        ]);
    if (opts.pageLifecycle !== false) this.listenToPage();
  }

  /** Sets the opaque id of the acting user for events tracked from now on. */
  setUser(user: string | undefined): void {
    if (user !== undefined && !isUserId(user)) throw new TypeError('shukei: user must be an opaque id, never a name or email');
    this.user = user;
  }

  /**
   * Checks and queues one event. Returns its event_id, or undefined when the
   * local checks refused it (onError then gets a ShukeiValidationError and
   * nothing leaves this process).
   */
  track<S extends Schema>(schema: S, data: DataBySchema[S], opts: TrackOptions = {}): string | undefined {
    if (this.closed) {
      this.counts.dropped++;
      this.report(new ShukeiError('closed', 'track() after close(); event dropped'));
      return undefined;
    }
    const tenantLevel = isTenantLevel(schema);
    const user = opts.user ?? (tenantLevel ? undefined : this.user);
    const client = opts.client ?? (tenantLevel ? undefined : this.client);
    const ev: Record<string, unknown> = {
      event_id: newEventId(),
      tenant_id: this.tenantId,
      occurred_at: undefined,
      schema,
      source: this.source,
    };
    if (user !== undefined) ev.user = user;
    if (client !== undefined) ev.client = { ...client };
    // A copy, so that the caller changing its object later cannot change a queued event.
    ev.data = typeof data === 'object' && data !== null && !Array.isArray(data) ? { ...data } : data;
    try {
      const at = new Date(opts.occurredAt ?? this.now());
      if (Number.isNaN(at.getTime())) throw new ShukeiValidationError('invalid_timestamp', 'occurred_at', 'not a valid time');
      ev.occurred_at = at.toISOString();
      validateEvent(ev);
      // Every value is ASCII by the checks above, so length is the byte count.
      if (JSON.stringify(ev).length > MAX_EVENT_BYTES) {
        throw new ShukeiValidationError('input_data.oversize', '', `larger than ${MAX_EVENT_BYTES} bytes`);
      }
    } catch (err) {
      this.counts.invalid++;
      this.report(err as Error);
      return undefined;
    }
    const event = ev as unknown as ShukeiEvent;
    this.enqueue([{ ev: event, attempts: 0, autoClient: opts.client === undefined && !tenantLevel && !this.fixedClient }], false);
    if (this.queue.length >= this.flushAt) void this.flush();
    else if (this.timer === undefined && this.running === undefined) this.schedule();
    return event.event_id;
  }

  trackFeatureUse(featureId: string, count = 1, recordsRegistered = 0, opts?: TrackOptions): string | undefined {
    return this.track('feature_use/v1', { feature_id: featureId, count, records_registered: recordsRegistered }, opts);
  }

  trackAppAccess(appId: string, action: Action, opts?: TrackOptions): string | undefined {
    return this.track('app_access/v1', { app_id: appId, action }, opts);
  }

  trackSetting(key: string, value: SettingValue, customizationPresent: boolean, customizationCount: number, opts?: TrackOptions): string | undefined {
    return this.track(
      'settings/v1',
      { setting_key: key, value, customization_present: customizationPresent, customization_count: customizationCount },
      opts,
    );
  }

  /** `requestId` is the service's request id (16-32 lower-case hex digits or a UUID), for support. */
  trackOperation(operationId: string, appId: string, resultCode: string, requestId: string, opts?: TrackOptions): string | undefined {
    return this.track('operation/v1', { operation_id: operationId, app_id: appId, result_code: resultCode, request_id: requestId }, opts);
  }

  /** Without arguments: `browser` and its family in a browser, `api` and `none` elsewhere. */
  trackClientEnv(env: Partial<ClientEnvData> = {}, opts?: TrackOptions): string | undefined {
    return this.track('client_env/v1', { ...detectClientEnv(), ...env }, opts);
  }

  /** Tenant-level counts: sent without a user. */
  trackTenantProfile(userCount: number, organizationCount: number, opts?: TrackOptions): string | undefined {
    return this.track('tenant_profile/v1', { user_count: userCount, organization_count: organizationCount }, opts);
  }

  /**
   * Sends everything queued, one request per batch. Resolves when the queue
   * is empty or what is left waits for a retry (the collector asked to back
   * off, or the token was refused). Never rejects: problems go to onError.
   */
  flush(): Promise<void> {
    this.running ??= this.drain().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /**
   * Stops the timers and page listeners and delivers what is queued, retrying
   * as the collector allows for up to closeTimeoutMs. What is left then counts
   * as failed.
   */
  close(): Promise<void> {
    this.closing ??= this.shutDown();
    return this.closing;
  }

  private report(err: Error): void {
    try {
      this.onError(err);
    } catch {
      // A throwing handler must not leave the queue half updated.
    }
  }

  stats(): Stats {
    return { queued: this.queue.length + this.inFlight, inFlight: this.inFlight, ...this.counts };
  }

  private async shutDown(): Promise<void> {
    this.closed = true;
    this.removeListeners?.();
    this.clearTimer();
    const deadline = Date.now() + this.closeTimeoutMs;
    await Promise.all([this.running, ...this.hideSends]);
    while (this.queue.length > 0 && !this.halted) {
      const wait = Math.max(0, this.retryAt - this.now());
      if (Date.now() + wait > deadline) break;
      if (wait > 0) {
        await sleep(wait);
        // The wait is over, even if an injected clock did not move.
        this.retryAt = Math.min(this.retryAt, this.now());
      }
      await this.flush();
    }
    if (this.queue.length > 0) {
      const left = this.queue.splice(0);
      this.counts.failed += left.length;
      this.report(new ShukeiError('gave_up', `${left.length} event(s) undelivered at close()`, { eventIds: left.map((p) => p.ev.event_id) }));
    }
  }

  private canSend(): boolean {
    return !this.halted && this.now() >= this.retryAt;
  }

  private async drain(): Promise<void> {
    try {
      await this.clientReady;
      while (this.queue.length > 0 && this.canSend()) {
        await this.send(this.take(MAX_BODY_BYTES));
      }
    } catch (err) {
      this.report(err as Error);
    } finally {
      this.schedule();
    }
  }

  private schedule(): void {
    this.clearTimer();
    if (this.closed || this.halted || this.queue.length === 0) return;
    const backoff = this.retryAt - this.now();
    const wait = backoff > 0 ? backoff : this.flushIntervalMs;
    this.timer = unref(
      setTimeout(() => {
        this.timer = undefined;
        void this.flush();
      }, wait),
    );
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private enqueue(items: Pending[], front: boolean): void {
    if (front) this.queue.unshift(...items);
    else this.queue.push(...items);
    const over = this.queue.length - this.maxQueue;
    if (over <= 0) return;
    // Oldest first: the newest usage is the more useful, and this bounds memory.
    this.queue.splice(0, over);
    this.counts.dropped += over;
    if (!this.dropReported) {
      this.dropReported = true;
      this.report(new ShukeiError('dropped', `queue full (${this.maxQueue}); dropping the oldest events`));
    }
  }

  /** Takes events from the head of the queue for one request body of at most maxBytes. */
  private take(maxBytes: number): Pending[] {
    const batch: Pending[] = [];
    let bytes = 2;
    while (batch.length < this.maxBatch && batch.length < this.queue.length) {
      const p = this.queue[batch.length];
      if (p.json === undefined) {
        // First send: from now on the event's bytes never change, so a retry
        // is the same event, not just the same id.
        if (p.autoClient) p.ev.client = { ...this.client };
        p.json = JSON.stringify(p.ev);
      }
      if (batch.length > 0 && bytes + p.json.length + 1 > maxBytes) break;
      bytes += p.json.length + 1;
      batch.push(p);
    }
    this.queue.splice(0, batch.length);
    return batch;
  }

  private async send(batch: Pending[]): Promise<void> {
    if (batch.length === 0) return;
    const body = `[${batch.map((p) => p.json).join(',')}]`;
    // In a page, any request small enough goes with keepalive: one that is
    // under way when the user leaves then still arrives.
    const keepalive = this.inPage && this.keepaliveSupported && body.length <= KEEPALIVE_BYTES - this.keepaliveBytes;
    this.inFlight += batch.length;
    if (keepalive) this.keepaliveBytes += body.length;
    let res: Response;
    try {
      res = await this.post(body, keepalive);
    } catch {
      return this.retryLater(batch, undefined);
    } finally {
      this.inFlight -= batch.length;
      if (keepalive) this.keepaliveBytes -= body.length;
    }
    const status = res.status;
    if (status === 413 && batch.length > 1) {
      const half = Math.ceil(batch.length / 2);
      await this.send(batch.slice(0, half));
      if (this.canSend()) await this.send(batch.slice(half));
      else this.enqueue(batch.slice(half), true);
      return;
    }
    if (status === 401) {
      // A bad token stays bad: keep the events, stop sending, say so once.
      this.halted = true;
      this.enqueue(batch, true);
      this.report(new ShukeiError('unauthorized', 'the collector refused the ingest token (401); sending stopped', { status }));
      return;
    }
    if (status === 429 || status >= 500) {
      const retryAfter = parseRetryAfter(res.headers.get('Retry-After'), this.now());
      // The collector answers 503 with results when it took none of the
      // batch; its rejected events must not go again with the rest.
      const results = await readResults(res);
      if (results) return this.settle(batch, results, retryAfter);
      return this.retryLater(batch, retryAfter);
    }
    if (status < 200 || status > 299) {
      this.counts.rejected += batch.length;
      this.report(
        new ShukeiError('http_error', `the collector refused a batch of ${batch.length} with HTTP ${status}; dropped`, {
          status,
          eventIds: batch.map((p) => p.ev.event_id),
        }),
      );
      return;
    }
    const results = await readResults(res);
    if (results === undefined) {
      // Without results we cannot know what was stored; sending again is safe
      // because the collector deduplicates by event_id.
      return this.retryLater(batch, undefined);
    }
    this.settle(batch, results);
  }

  private settle(batch: Pending[], results: ResultItem[], retryAfterMs?: number): void {
    // By event_id where the reply has one; the collector leaves it out of
    // events it refused as input data, and those it names by index.
    const byId = new Map<string, ResultItem>();
    const byIndex = new Map<number, ResultItem>();
    for (const r of results) {
      if (typeof r?.event_id === 'string' && r.event_id !== '') byId.set(r.event_id, r);
      else if (typeof r?.index === 'number') byIndex.set(r.index, r);
    }
    const again: Pending[] = [];
    const rejectedIds: string[] = [];
    const reasons: Record<string, number> = {};
    batch.forEach((p, i) => {
      const r = byId.get(p.ev.event_id) ?? byIndex.get(i);
      switch (r?.status) {
        case 'accepted':
          this.counts.sent++;
          break;
        case 'rejected': {
          this.counts.rejected++;
          rejectedIds.push(p.ev.event_id);
          const key = r.field ? `${r.reason ?? 'unknown'} at ${r.field}` : (r.reason ?? 'unknown');
          reasons[key] = (reasons[key] ?? 0) + 1;
          break;
        }
        default:
          // `retry`, or no word on this event at all.
          again.push(p);
      }
    });
    if (rejectedIds.length > 0) {
      const summary = Object.entries(reasons)
        .map(([k, n]) => `${k} (${n})`)
        .join(', ');
      this.report(new ShukeiError('rejected', `the collector rejected ${rejectedIds.length} event(s): ${summary}`, { eventIds: rejectedIds, reasons }));
    }
    if (again.length > 0) {
      this.retryLater(again, retryAfterMs);
    } else {
      this.failures = 0;
      this.dropReported = false;
    }
  }

  private retryLater(items: Pending[], retryAfterMs: number | undefined): void {
    this.failures++;
    const exp = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** Math.min(this.failures - 1, 30));
    // Half fixed, half random: clients that failed together do not come back together.
    const delay = Math.max(exp / 2 + (this.random() * exp) / 2, retryAfterMs ?? 0);
    this.retryAt = Math.max(this.retryAt, this.now() + delay);
    const keep: Pending[] = [];
    const gaveUp: string[] = [];
    for (const p of items) {
      p.attempts++;
      if (p.attempts > this.maxRetries) gaveUp.push(p.ev.event_id);
      else keep.push(p);
    }
    this.counts.retried += keep.length;
    this.counts.failed += gaveUp.length;
    this.enqueue(keep, true);
    if (gaveUp.length > 0) {
      this.report(new ShukeiError('gave_up', `${gaveUp.length} event(s) undelivered after ${this.maxRetries} retries`, { eventIds: gaveUp }));
    }
  }

  private async post(body: string, keepalive: boolean): Promise<Response> {
    const ctrl = typeof AbortController === 'function' ? new AbortController() : undefined;
    const t = ctrl && unref(setTimeout(() => ctrl.abort(), this.requestTimeoutMs));
    try {
      return await this.fetchFn(this.url, {
        method: 'POST',
        headers: { Authorization: `Bearer ${this.token}`, 'Content-Type': 'application/json' },
        body,
        keepalive,
        // The page's cookies and address are none of the collector's business:
        // an address can hold a document id or a search the user typed.
        credentials: 'omit',
        referrerPolicy: 'no-referrer',
        signal: ctrl?.signal,
      });
    } finally {
      if (t !== undefined) clearTimeout(t);
    }
  }

  private listenToPage(): void {
    const doc = (globalThis as { document?: Document }).document;
    const win = globalThis as unknown as Partial<Window>;
    if (!doc?.addEventListener || typeof win.addEventListener !== 'function') return;
    const onHide = (e: Event) => {
      if (e.type === 'pagehide' || doc.visibilityState === 'hidden') this.flushOnHide();
    };
    doc.addEventListener('visibilitychange', onHide);
    win.addEventListener('pagehide', onHide);
    this.inPage = true;
    this.removeListeners = () => {
      doc.removeEventListener('visibilitychange', onHide);
      win.removeEventListener?.('pagehide', onHide);
    };
  }

  /**
   * The page may be gone in a moment. What fits in one keepalive request
   * goes that way, which the browser completes after unload, with the same
   * headers as any other request. The rest, or everything where keepalive is
   * missing, goes with navigator.sendBeacon to /v1/beacon. What neither takes
   * stays queued for when (if) the page comes back.
   */
  private flushOnHide(): void {
    if (this.queue.length === 0 || !this.canSend()) return;
    const budget = KEEPALIVE_BYTES - this.keepaliveBytes;
    if (this.keepaliveSupported && budget >= MAX_EVENT_BYTES) this.sendOnHide(this.take(budget));
    if (this.queue.length === 0) return;
    if (!this.beacon() && !this.keepaliveSupported) {
      // No keepalive and no sendBeacon: a plain request is the best we can
      // do; it completes when the tab is only hidden and may be cut on unload.
      this.sendOnHide(this.take(budget));
    }
  }

  private sendOnHide(batch: Pending[]): void {
    const sending = this.send(batch).finally(() => {
      this.hideSends.delete(sending);
      this.schedule();
    });
    this.hideSends.add(sending);
  }

  /**
   * Hands the queue to navigator.sendBeacon in bodies under BEACON_BYTES.
   * sendBeacon cannot set headers, so the token goes in the body (never the
   * URL, which logs keep), and it never shows the reply: an event the browser
   * queued counts as sent. When it refuses (its budget is used up) the events
   * stay queued and no more beacons are tried. Returns false when there is no
   * sendBeacon.
   */
  private beacon(): boolean {
    const nav = (globalThis as { navigator?: { sendBeacon?: (url: string, data: Blob) => boolean } }).navigator;
    if (typeof nav?.sendBeacon !== 'function' || typeof Blob !== 'function') return false;
    const head = `{"token":${JSON.stringify(this.token)},"events":`;
    // take() counts the array; the token may be non-ASCII, so count its bytes.
    const limit = BEACON_BYTES - new TextEncoder().encode(head + '}').length;
    while (this.queue.length > 0) {
      const batch = this.take(limit);
      const body = `${head}[${batch.map((p) => p.json).join(',')}]}`;
      let queued = false;
      try {
        queued = nav.sendBeacon(this.beaconUrl, new Blob([body], { type: BEACON_TYPE }));
      } catch {
        // Some browsers throw instead of returning false; same meaning.
      }
      if (!queued) {
        this.enqueue(batch, true);
        break;
      }
      this.counts.sent += batch.length;
    }
    return true;
  }
}

// Missing in old Firefox. Asked per client rather than once at load, so a
// test can take it away.
function keepaliveSupported(): boolean {
  return typeof Request === 'function' && 'keepalive' in Request.prototype;
}

async function readResults(res: Response): Promise<ResultItem[] | undefined> {
  try {
    const reply = (await res.json()) as { results?: unknown };
    return Array.isArray(reply?.results) ? (reply.results as ResultItem[]) : undefined;
  } catch {
    return undefined;
  }
}

function positive(name: string, v: number | undefined, dflt: number, zeroOk = false): number {
  if (v === undefined) return dflt;
  if (!Number.isFinite(v) || v < (zeroOk ? 0 : 1)) throw new TypeError(`shukei: ${name} must be a ${zeroOk ? 'non-negative' : 'positive'} number`);
  return v;
}
