// A stand-in for the collector's POST /v1/events, passed as the `fetch`
// option: it records every request and answers from a script.

import type { ShukeiEvent } from '../src/index.js';

export interface Call {
  url: string;
  init: RequestInit;
  headers: Record<string, string>;
  body: string;
  events: ShukeiEvent[];
}

/** What the fake answers: a reply, or an Error to throw like a network failure. */
export type Reply = { status: number; headers?: Record<string, string>; body?: unknown } | Error;
export type Responder = (events: ShukeiEvent[], call: Call) => Reply;

export const accepted: Responder = (events) => ({ status: 200, body: reply(events, () => 'accepted') });

/** A 200 reply with one result a event, its status chosen by `status`. */
export function reply(events: ShukeiEvent[], status: (ev: ShukeiEvent, i: number) => 'accepted' | 'rejected' | 'retry') {
  const results = events.map((ev, i) => {
    const s = status(ev, i);
    return s === 'rejected'
      ? { index: i, event_id: ev.event_id, status: s, reason: 'invalid_field', field: 'data.feature_id' }
      : { index: i, event_id: ev.event_id, status: s };
  });
  const n = (s: string) => results.filter((r) => r.status === s).length;
  return { accepted: n('accepted'), rejected: n('rejected'), retry: n('retry'), results };
}

export class FakeCollector {
  readonly calls: Call[] = [];
  /** Used in order, one a request; `fallback` after they run out. */
  readonly script: Responder[];
  fallback: Responder = accepted;

  constructor(...script: Responder[]) {
    this.script = script;
  }

  readonly fetch = async (url: string, init: RequestInit): Promise<Response> => {
    const body = String(init.body);
    const call: Call = {
      url,
      init,
      headers: Object.fromEntries(new Headers(init.headers).entries()),
      body,
      events: JSON.parse(body) as ShukeiEvent[],
    };
    this.calls.push(call);
    const r = (this.script.shift() ?? this.fallback)(call.events, call);
    if (r instanceof Error) throw r;
    return new Response(r.body === undefined ? null : JSON.stringify(r.body), { status: r.status, headers: r.headers });
  };

  /** Event ids of every request, in order. */
  ids(): string[][] {
    return this.calls.map((c) => c.events.map((e) => e.event_id));
  }
}

/** A clock the test moves by hand. */
export class FakeClock {
  t = Date.parse('2026-05-31T00:15:00Z');
  readonly now = () => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}

export const tick = () => new Promise<void>((r) => setImmediate(r));
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Resolves once `cond` holds; fails the test after `ms`. */
export async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms`);
    await sleep(5);
  }
}
