// The event contract of schemas/events/*.json, as TypeScript types and a small
// checker. The checker mirrors the Go decoder's order (structure, presence,
// then values) so that a local rejection names the same reason the collector
// would; it deliberately does not try to be a JSON Schema validator, and it
// does not run the collector's input-data guard (names, phone numbers, file
// names that happen to match an id pattern are still caught there).

export const SCHEMAS = [
  'tenant_profile/v1',
  'client_env/v1',
  'app_access/v1',
  'feature_use/v1',
  'settings/v1',
  'operation/v1',
] as const;
export type Schema = (typeof SCHEMAS)[number];

export const OS_VALUES = ['windows', 'macos', 'linux', 'ios', 'android', 'chromeos', 'other'] as const;
export type OS = (typeof OS_VALUES)[number];
export const DEVICE_KINDS = ['desktop', 'mobile', 'tablet', 'other'] as const;
export type DeviceKind = (typeof DEVICE_KINDS)[number];
export const CLIENT_KINDS = ['browser', 'desktop_app', 'mobile_app', 'api'] as const;
export type ClientKind = (typeof CLIENT_KINDS)[number];
export const BROWSERS = ['chrome', 'edge', 'firefox', 'safari', 'other', 'none'] as const;
export type Browser = (typeof BROWSERS)[number];
export const ACTIONS = ['open', 'view', 'create', 'update', 'delete', 'export', 'import', 'search', 'share'] as const;
export type Action = (typeof ACTIONS)[number];

export interface Client {
  os: OS;
  /** Numeric only (`17.4`); omit when unknown, never send an empty string. */
  os_version?: string;
  device_kind: DeviceKind;
}

export interface TenantProfileData {
  user_count: number;
  organization_count: number;
}
export interface ClientEnvData {
  client_kind: ClientKind;
  browser: Browser;
}
export interface AppAccessData {
  app_id: string;
  action: Action;
}
export interface FeatureUseData {
  feature_id: string;
  count: number;
  records_registered: number;
}
export type SettingValue = string | boolean | number;
export interface SettingsData {
  setting_key: string;
  value: SettingValue;
  customization_present: boolean;
  customization_count: number;
}
export interface OperationData {
  operation_id: string;
  app_id: string;
  result_code: string;
  request_id: string;
}

export interface DataBySchema {
  'tenant_profile/v1': TenantProfileData;
  'client_env/v1': ClientEnvData;
  'app_access/v1': AppAccessData;
  'feature_use/v1': FeatureUseData;
  'settings/v1': SettingsData;
  'operation/v1': OperationData;
}

export interface ShukeiEvent<S extends Schema = Schema> {
  event_id: string;
  tenant_id: string;
  occurred_at: string;
  schema: S;
  source: string;
  user?: string;
  client?: Client;
  data: DataBySchema[S];
}

/** The collector's rejection reasons that a local check can produce. */
export type Reason =
  | 'wrong_type'
  | 'unknown_field'
  | 'missing_field'
  | 'forbidden_field'
  | 'unknown_schema'
  | 'invalid_event_id'
  | 'invalid_tenant_id'
  | 'invalid_timestamp'
  | 'invalid_field'
  | 'out_of_range'
  | 'inconsistent_fields'
  | 'input_data.oversize';

/**
 * A local rejection. Like the collector's, its message names the field but
 * never quotes the value: the value may be exactly the content we refuse to
 * carry, and error messages end up in logs and error trackers.
 */
export class ShukeiValidationError extends Error {
  readonly reason: Reason;
  readonly field: string;
  constructor(reason: Reason, field: string, hint: string) {
    super(`shukei: event rejected locally: ${reason}${field ? ` at ${field}` : ''}: ${hint}`);
    this.name = 'ShukeiValidationError';
    this.reason = reason;
    this.field = field;
  }
}

export const ID_PATTERN = /^[a-z0-9][a-z0-9_.-]{0,63}$/;
const EVENT_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const NIL_UUID = '00000000-0000-0000-0000-000000000000';
const USER_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_:=-]{0,127}$/;
const OS_VERSION_PATTERN = /^[0-9]{1,4}(\.[0-9]{1,5}){0,3}$/;
const TOKEN_PATTERN = /^[a-z0-9][a-z0-9_.-]{0,31}$/;
const RESULT_CODE_PATTERN = /^[a-z0-9_]{1,32}$/;
const REQUEST_ID_PATTERN = /^([0-9a-f]{16,32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;
const TIMESTAMP_PATTERN =
  /^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$/;

/** The largest event the collector takes (8 KiB); real ones are a few hundred bytes. */
export const MAX_EVENT_BYTES = 8 << 10;

export const isId = (s: unknown): s is string => typeof s === 'string' && ID_PATTERN.test(s);
export const isUserId = (s: unknown): s is string => typeof s === 'string' && USER_PATTERN.test(s);
export const isOSVersion = (s: unknown): s is string => typeof s === 'string' && OS_VERSION_PATTERN.test(s);
export const isSchema = (s: unknown): s is Schema => (SCHEMAS as readonly unknown[]).includes(s);

export function isTimestamp(s: string): boolean {
  if (!TIMESTAMP_PATTERN.test(s)) return false;
  // The pattern lets the 31st through in every month; Go's time.Parse does not.
  const [year, month, day] = [s.slice(0, 4), s.slice(5, 7), s.slice(8, 10)].map(Number);
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  return day <= [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1];
}

type Kind = 'string' | 'integer' | 'boolean' | 'object' | 'setting';

/**
 * One key of an object in the contract. Declarative, so that a test can hold
 * these tables against the JSON Schema files and catch drift.
 */
export interface Field {
  kind: Kind;
  required: boolean;
  /** For strings (and a setting's token form). */
  pattern?: RegExp;
  values?: readonly string[];
  /** For integers (and a setting's integer form). */
  min?: number;
  max?: number;
}

const fail = (reason: Reason, field: string, hint: string): never => {
  throw new ShukeiValidationError(reason, field, hint);
};

const str = (required: boolean, p: RegExp | readonly string[]): Field =>
  p instanceof RegExp ? { kind: 'string', required, pattern: p } : { kind: 'string', required, values: p };
const int = (min: number, max: number): Field => ({ kind: 'integer', required: true, min, max });

export const ENVELOPE_FIELDS: Readonly<Record<string, Field>> = {
  event_id: str(true, EVENT_ID_PATTERN),
  tenant_id: str(true, ID_PATTERN),
  occurred_at: str(true, TIMESTAMP_PATTERN),
  schema: str(true, SCHEMAS),
  source: str(true, ID_PATTERN),
  user: str(false, USER_PATTERN),
  client: { kind: 'object', required: false },
  data: { kind: 'object', required: true },
};

export const CLIENT_FIELDS: Readonly<Record<string, Field>> = {
  os: str(true, OS_VALUES),
  os_version: str(false, OS_VERSION_PATTERN),
  device_kind: str(true, DEVICE_KINDS),
};

export const DATA_FIELDS: Readonly<Record<Schema, Readonly<Record<string, Field>>>> = {
  'tenant_profile/v1': {
    user_count: int(0, 10_000_000),
    organization_count: int(0, 1_000_000),
  },
  'client_env/v1': {
    client_kind: str(true, CLIENT_KINDS),
    browser: str(true, BROWSERS),
  },
  'app_access/v1': {
    app_id: str(true, ID_PATTERN),
    action: str(true, ACTIONS),
  },
  'feature_use/v1': {
    feature_id: str(true, ID_PATTERN),
    count: int(1, 1_000_000),
    records_registered: int(0, 1_000_000),
  },
  'settings/v1': {
    setting_key: str(true, ID_PATTERN),
    value: { kind: 'setting', required: true, pattern: TOKEN_PATTERN, min: -1_000_000, max: 1_000_000 },
    customization_present: { kind: 'boolean', required: true },
    customization_count: int(0, 10_000),
  },
  'operation/v1': {
    operation_id: str(true, ID_PATTERN),
    app_id: str(true, ID_PATTERN),
    result_code: str(true, RESULT_CODE_PATTERN),
    request_id: str(true, REQUEST_ID_PATTERN),
  },
};

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function hasType(v: unknown, kind: Kind): boolean {
  switch (kind) {
    case 'string':
      return typeof v === 'string';
    case 'boolean':
      return typeof v === 'boolean';
    case 'integer':
      // A huge integer is still an integer: its bound, not its type, is wrong.
      return typeof v === 'number' && Number.isInteger(v);
    case 'object':
      return isPlainObject(v);
    case 'setting':
      return typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isInteger(v));
  }
}

// Structure first (unknown keys, types, presence), values later: the Go
// decoder's order, so both sides agree on the reason of a faulty event.
function checkShape(obj: unknown, prefix: string, fields: Readonly<Record<string, Field>>): Record<string, unknown> {
  const path = (key: string) => (prefix ? `${prefix}.${key}` : key);
  if (!isPlainObject(obj)) return fail('wrong_type', prefix, 'must be an object');
  for (const [key, value] of Object.entries(obj)) {
    const f = Object.prototype.hasOwnProperty.call(fields, key) ? fields[key] : undefined;
    // The key itself may be the content (a name), so it is not quoted.
    if (!f) return fail('unknown_field', path('*'), 'the schema defines no such key');
    // Only a JS caller can hand us undefined; JSON.stringify drops the key.
    if (value === undefined) continue;
    if (!hasType(value, f.kind)) fail('wrong_type', path(key), `must be of type ${f.kind}`);
  }
  for (const [key, f] of Object.entries(fields)) {
    if (f.required && obj[key] === undefined) fail('missing_field', path(key), 'required');
  }
  return obj;
}

function checkValue(v: unknown, f: Field, field: string, reason: Reason = 'invalid_field'): void {
  if (typeof v === 'string') {
    if (f.values && !f.values.includes(v)) fail(reason, field, `must be one of ${f.values.join(', ')}`);
    if (f.pattern && !f.pattern.test(v)) fail(reason, field, `must match ${f.pattern.source}`);
  } else if (typeof v === 'number' && f.min !== undefined && f.max !== undefined) {
    if (v < f.min || v > f.max) fail('out_of_range', field, `must be between ${f.min} and ${f.max}`);
  }
}

function checkValues(obj: Record<string, unknown>, prefix: string, fields: Readonly<Record<string, Field>>): void {
  for (const [key, f] of Object.entries(fields)) {
    if (obj[key] !== undefined) checkValue(obj[key], f, `${prefix}.${key}`);
  }
}

/** Whether `schema` describes a whole tenant: no user, client optional. */
export const isTenantLevel = (schema: Schema): boolean => schema === 'tenant_profile/v1';

/**
 * Throws a ShukeiValidationError unless `ev` is an event the contract accepts.
 * Event age is not checked: it depends on the collector's clock and limits.
 */
export function validateEvent(ev: unknown): asserts ev is ShukeiEvent {
  const e = checkShape(ev, '', ENVELOPE_FIELDS);
  if (e.client !== undefined) checkShape(e.client, 'client', CLIENT_FIELDS);
  if (!isTimestamp(e.occurred_at as string)) {
    fail('invalid_timestamp', 'occurred_at', 'must be RFC 3339 with an explicit offset, e.g. 2025-05-31T09:15:00Z');
  }
  const schema = e.schema;
  if (!isSchema(schema)) return fail('unknown_schema', 'schema', `must be one of ${SCHEMAS.join(', ')}`);
  if (isTenantLevel(schema)) {
    if (e.user !== undefined) fail('forbidden_field', 'user', 'a tenant-level event carries no user');
  } else {
    if (e.user === undefined) fail('missing_field', 'user', 'required for user-level categories');
    if (e.client === undefined) fail('missing_field', 'client', 'required for user-level categories');
  }
  const data = checkShape(e.data, 'data', DATA_FIELDS[schema]);

  if (e.event_id === NIL_UUID) fail('invalid_event_id', 'event_id', 'the nil UUID is refused');
  checkValue(e.event_id, ENVELOPE_FIELDS.event_id, 'event_id', 'invalid_event_id');
  checkValue(e.tenant_id, ENVELOPE_FIELDS.tenant_id, 'tenant_id', 'invalid_tenant_id');
  checkValue(e.source, ENVELOPE_FIELDS.source, 'source');
  // Names, logins and email addresses fail this pattern (no `.`, no `@`).
  checkValue(e.user, ENVELOPE_FIELDS.user, 'user');
  if (e.client !== undefined) checkValues(e.client as Record<string, unknown>, 'client', CLIENT_FIELDS);
  checkValues(data, 'data', DATA_FIELDS[schema]);
  if (schema === 'settings/v1' && data.customization_present !== (data.customization_count as number) > 0) {
    fail('inconsistent_fields', 'data.customization_count', 'must be 0 exactly when customization_present is false');
  }
}

/** Throws a ShukeiValidationError unless `c` is a valid envelope `client`. */
export function validateClient(c: unknown): asserts c is Client {
  checkValues(checkShape(c, 'client', CLIENT_FIELDS), 'client', CLIENT_FIELDS);
}
