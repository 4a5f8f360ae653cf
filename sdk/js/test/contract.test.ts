// Holds the SDK against the contract in schemas/: the JSON Schema files and
// the example events in schemas/testdata. These files are read at test time,
// so a change on the Go side that the SDK does not follow fails here.

import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { SCHEMAS, ShukeiClient, ShukeiValidationError, validateEvent, type Schema, type ShukeiEvent } from '../src/index.js';
import { CLIENT_FIELDS, DATA_FIELDS, ENVELOPE_FIELDS, type Field } from '../src/schema.js';
import { FakeCollector } from './fake.js';

function findSchemas(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); dir !== dirname(dir); dir = dirname(dir)) {
    const p = join(dir, 'schemas');
    if (existsSync(join(p, 'events', 'envelope.json'))) return p;
  }
  throw new Error('schemas/events/envelope.json not found above the test');
}

const ROOT = findSchemas();
const readJSON = (p: string): any => JSON.parse(readFileSync(p, 'utf8'));
const envelope = readJSON(join(ROOT, 'events', 'envelope.json'));
const categoryFile = (s: string) => join(ROOT, 'events', `${s.replace('/', '.')}.json`);

function resolve(prop: any): any {
  const ref: string | undefined = prop.$ref;
  return ref?.startsWith('#/$defs/') ? { ...envelope.$defs[ref.slice('#/$defs/'.length)], ...prop, $ref: undefined } : prop;
}

/** Holds one object's field table against a JSON Schema object. */
function sameObject(name: string, fields: Readonly<Record<string, Field>>, schema: any) {
  assert.equal(schema.additionalProperties, false, `${name}: unknown keys are refused`);
  assert.deepEqual(Object.keys(fields).sort(), Object.keys(schema.properties).sort(), `${name}: keys`);
  assert.deepEqual(
    Object.keys(fields).filter((k) => fields[k].required).sort(),
    [...schema.required].sort(),
    `${name}: required keys`,
  );
  for (const [key, f] of Object.entries(fields)) {
    const p = resolve(schema.properties[key]);
    const what = `${name}.${key}`;
    if (f.kind === 'setting') {
      const [s, b, i] = p.oneOf;
      assert.deepEqual([s.type, b.type, i.type], ['string', 'boolean', 'integer'], what);
      assert.equal(f.pattern?.source, s.pattern, what);
      assert.deepEqual([f.min, f.max], [i.minimum, i.maximum], what);
    } else if (f.values) {
      assert.deepEqual([...f.values].sort(), [...p.enum].sort(), what);
    } else if (f.pattern) {
      assert.equal(p.type, 'string', what);
      assert.equal(f.pattern.source, p.pattern, what);
    } else if (f.kind === 'integer') {
      assert.equal(p.type, 'integer', what);
      assert.deepEqual([f.min, f.max], [p.minimum, p.maximum], what);
    } else if (f.kind === 'boolean' || key === 'data') {
      assert.equal(p.type, f.kind, what);
    } else {
      assert.equal(key, 'client', what);
    }
  }
}

describe('field tables match schemas/events', () => {
  test('envelope', () => {
    sameObject('envelope', ENVELOPE_FIELDS, envelope);
    sameObject('client', CLIENT_FIELDS, envelope.$defs.client);
  });

  test('every category has a schema file and every schema file a category', () => {
    const files = readdirSync(join(ROOT, 'events')).filter((f) => /^[a-z_]+\.v[0-9]+\.json$/.test(f));
    assert.deepEqual(files.map((f) => readJSON(join(ROOT, 'events', f)).title).sort(), [...SCHEMAS].sort());
  });

  for (const schema of SCHEMAS) {
    test(schema, () => sameObject(schema, DATA_FIELDS[schema], readJSON(categoryFile(schema))));
  }
});

const VALID = join(ROOT, 'testdata', 'valid');
const valid = readdirSync(VALID)
  .filter((f) => f.endsWith('.json'))
  .map((f) => [f, readJSON(join(VALID, f))] as [string, any]);

describe('valid vectors', () => {
  test('there are some', () => assert.ok(valid.length >= 10, `${valid.length} vectors`));

  for (const [name, ev] of valid) {
    test(`${name} passes the local checks`, () => {
      validateEvent(ev);
    });

    test(`${name} is what the SDK builds`, async () => {
      const fake = new FakeCollector();
      const errors: Error[] = [];
      const c = new ShukeiClient({
        endpoint: 'https://collector.example',
        token: 't',
        tenantId: ev.tenant_id,
        source: ev.source,
        fetch: fake.fetch,
        pageLifecycle: false,
        onError: (e) => errors.push(e),
      });
      const id = c.track(ev.schema as Schema, ev.data, { user: ev.user, client: ev.client, occurredAt: Date.parse(ev.occurred_at) });
      await c.close();
      assert.deepEqual(errors, []);
      const [sent] = fake.calls[0].events as (ShukeiEvent & Record<string, unknown>)[];
      // Exactly the envelope's fields: the vector's, no more, no fewer.
      assert.deepEqual(Object.keys(sent).sort(), Object.keys(ev).sort());
      for (const k of Object.keys(sent)) assert.ok(k in envelope.properties, k);
      for (const k of envelope.required) assert.ok(k in sent, k);
      assert.equal(sent.event_id, id);
      assert.match(sent.event_id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      assert.notEqual(sent.event_id, ev.event_id);
      assert.equal(Date.parse(sent.occurred_at), Date.parse(ev.occurred_at));
      for (const k of ['tenant_id', 'schema', 'source', 'user', 'client', 'data']) assert.deepEqual(sent[k], ev[k], k);
      validateEvent(sent);
    });
  }
});

describe('invalid vectors', () => {
  const INVALID = join(ROOT, 'testdata', 'invalid');
  const expected: Record<string, { validate: string; reason: string; schema_rejects: boolean }> = readJSON(join(INVALID, 'expected.json'));

  for (const [name, want] of Object.entries(expected)) {
    if (!want.schema_rejects) {
      // Duplicate keys, event age and the input-data guard are the collector's:
      // JSON.parse cannot see a duplicate, and the guard is not repeated here.
      continue;
    }
    test(`${name} is refused locally as ${want.validate}`, () => {
      let ev: unknown;
      try {
        ev = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(readFileSync(join(INVALID, name))));
      } catch {
        // Not JSON or not UTF-8: JSON.stringify never produces that.
        assert.equal(want.validate, 'malformed_json');
        return;
      }
      assert.throws(
        () => validateEvent(ev),
        (err: unknown) => err instanceof ShukeiValidationError && err.reason === want.validate,
      );
    });
  }
});
