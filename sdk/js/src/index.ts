export { ShukeiClient, ShukeiError, parseRetryAfter, MAX_BATCH, MAX_BODY_BYTES } from './client.js';
export type { ShukeiOptions, TrackOptions, Stats, ShukeiErrorCode } from './client.js';
export {
  validateEvent,
  validateClient,
  isTimestamp,
  isTenantLevel,
  ShukeiValidationError,
  SCHEMAS,
  OS_VALUES,
  DEVICE_KINDS,
  CLIENT_KINDS,
  BROWSERS,
  ACTIONS,
  MAX_EVENT_BYTES,
} from './schema.js';
export type {
  Schema,
  OS,
  DeviceKind,
  ClientKind,
  Browser,
  Action,
  Client,
  ShukeiEvent,
  DataBySchema,
  TenantProfileData,
  ClientEnvData,
  AppAccessData,
  FeatureUseData,
  SettingsData,
  SettingValue,
  OperationData,
  Reason,
} from './schema.js';
export { clientFromUserAgent, clientFromHints, clientFromNode, browserFromUserAgent, browserFromBrands, shortVersion } from './useragent.js';
export type { UAHints } from './useragent.js';
export { detectClient, detectClientEnv } from './environment.js';
