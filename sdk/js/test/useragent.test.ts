import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  browserFromBrands,
  browserFromUserAgent,
  clientFromHints,
  clientFromNode,
  clientFromUserAgent,
  detectClient,
  detectClientEnv,
  ShukeiClient,
  validateClient,
  type Browser,
  type Client,
} from '../src/index.js';
import { FakeCollector } from './fake.js';

// [user agent, expected client, expected browser family]
const UA_TABLE: [string, Client, Browser][] = [
  // Windows: NT 10.0 is both Windows 10 and 11, so no version rather than a wrong one.
  ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
    { os: 'windows', device_kind: 'desktop' }, 'chrome'],
  ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51',
    { os: 'windows', device_kind: 'desktop' }, 'edge'],
  ['Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0',
    { os: 'windows', device_kind: 'desktop' }, 'firefox'],
  ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 OPR/109.0.0.0',
    { os: 'windows', device_kind: 'desktop' }, 'other'],
  ['Mozilla/5.0 (Windows NT 6.1; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Safari/537.36',
    { os: 'windows', os_version: '7', device_kind: 'desktop' }, 'chrome'],
  ['Mozilla/5.0 (Windows NT 6.3; Win64; x64; rv:115.0) Gecko/20100101 Firefox/115.0',
    { os: 'windows', os_version: '8.1', device_kind: 'desktop' }, 'firefox'],
  ['Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko',
    { os: 'windows', os_version: '7', device_kind: 'desktop' }, 'other'],
  // macOS: every current browser freezes the version at 10.15(.7).
  ['Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15',
    { os: 'macos', device_kind: 'desktop' }, 'safari'],
  ['Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
    { os: 'macos', device_kind: 'desktop' }, 'chrome'],
  ['Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:125.0) Gecko/20100101 Firefox/125.0',
    { os: 'macos', device_kind: 'desktop' }, 'firefox'],
  ['Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/14.1.2 Safari/605.1.15',
    { os: 'macos', os_version: '10.14', device_kind: 'desktop' }, 'safari'],
  // iOS and iPadOS.
  ['Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1',
    { os: 'ios', os_version: '17.4', device_kind: 'mobile' }, 'safari'],
  ['Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1',
    { os: 'ios', os_version: '17.4', device_kind: 'mobile' }, 'chrome'],
  ['Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/125.0 Mobile/15E148 Safari/605.1.15',
    { os: 'ios', os_version: '17', device_kind: 'mobile' }, 'firefox'],
  ['Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.0 Mobile/15E148 Safari/604.1',
    { os: 'ios', os_version: '26', device_kind: 'mobile' }, 'safari'],
  ['Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.6 Mobile/15E148 Safari/604.1',
    { os: 'ios', os_version: '18.6', device_kind: 'mobile' }, 'safari'],
  ['Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1',
    { os: 'ios', os_version: '16.6', device_kind: 'tablet' }, 'safari'],
  ['Mozilla/5.0 (iPod touch; CPU iPhone OS 15_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/15.7 Mobile/15E148 Safari/604.1',
    { os: 'ios', os_version: '15.7', device_kind: 'mobile' }, 'safari'],
  // Android: Chrome's reduced UA always says "Android 10; K".
  ['Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36',
    { os: 'android', device_kind: 'mobile' }, 'chrome'],
  ['Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
    { os: 'android', device_kind: 'tablet' }, 'chrome'],
  ['Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 EdgA/124.0.2478.64',
    { os: 'android', device_kind: 'mobile' }, 'edge'],
  ['Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36',
    { os: 'android', os_version: '14', device_kind: 'mobile' }, 'other'],
  ['Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0',
    { os: 'android', os_version: '14', device_kind: 'mobile' }, 'firefox'],
  ['Mozilla/5.0 (Android 13; Tablet; rv:125.0) Gecko/125.0 Firefox/125.0',
    { os: 'android', os_version: '13', device_kind: 'tablet' }, 'firefox'],
  ['Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/112.0.0.0 Safari/537.36',
    { os: 'android', os_version: '13', device_kind: 'tablet' }, 'chrome'],
  ['Mozilla/5.0 (Linux; Android 8.1.0; Nexus 5X Build/OPM7.181205.001) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.110 Mobile Safari/537.36',
    { os: 'android', os_version: '8.1', device_kind: 'mobile' }, 'chrome'],
  // ChromeOS and Linux carry no usable version.
  ['Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
    { os: 'chromeos', device_kind: 'desktop' }, 'chrome'],
  ['Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0',
    { os: 'linux', device_kind: 'desktop' }, 'firefox'],
  ['Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
    { os: 'linux', device_kind: 'desktop' }, 'chrome'],
  // Not a browser, or garbage.
  ['curl/8.5.0', { os: 'other', device_kind: 'other' }, 'other'],
  ['Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)', { os: 'other', device_kind: 'other' }, 'other'],
  ['', { os: 'other', device_kind: 'other' }, 'other'],
  ['Mozilla/5.0 (Windows NT 99999.0)', { os: 'windows', device_kind: 'desktop' }, 'other'],
  ['Mozilla/5.0 (iPhone; CPU iPhone OS 123456_7 like Mac OS X) taro.yamada@example.co.jp', { os: 'ios', device_kind: 'mobile' }, 'other'],
];

// The brief's pattern for what the SDK derives: a major or major.minor version.
const DERIVED_VERSION = /^[0-9]{1,4}(\.[0-9]{1,4})?$/;

function assertDerived(c: Client) {
  validateClient(c);
  assert.deepEqual(Object.keys(c).filter((k) => !['os', 'os_version', 'device_kind'].includes(k)), []);
  if (c.os_version !== undefined) assert.match(c.os_version, DERIVED_VERSION);
}

describe('clientFromUserAgent', () => {
  for (const [ua, client, browser] of UA_TABLE) {
    test(ua || '(empty)', () => {
      const got = clientFromUserAgent(ua);
      assert.deepEqual(got, client);
      assertDerived(got);
      assert.equal(browserFromUserAgent(ua), browser);
    });
  }
});

describe('clientFromHints', () => {
  const table: [Parameters<typeof clientFromHints>[0], Client | undefined][] = [
    [{ platform: 'Windows', platformVersion: '15.0.0', mobile: false }, { os: 'windows', os_version: '11', device_kind: 'desktop' }],
    [{ platform: 'Windows', platformVersion: '13.0.0', mobile: false }, { os: 'windows', os_version: '11', device_kind: 'desktop' }],
    [{ platform: 'Windows', platformVersion: '10.0.0', mobile: false }, { os: 'windows', os_version: '10', device_kind: 'desktop' }],
    [{ platform: 'Windows', platformVersion: '0.3.0', mobile: false }, { os: 'windows', device_kind: 'desktop' }],
    [{ platform: 'macOS', platformVersion: '14.4.1', mobile: false }, { os: 'macos', os_version: '14.4', device_kind: 'desktop' }],
    [{ platform: 'macOS', platformVersion: '26.0.0', mobile: false }, { os: 'macos', os_version: '26', device_kind: 'desktop' }],
    [{ platform: 'Android', platformVersion: '14.0.0', mobile: true }, { os: 'android', os_version: '14', device_kind: 'mobile' }],
    [{ platform: 'Android', platformVersion: '13.0.0', mobile: false }, { os: 'android', os_version: '13', device_kind: 'tablet' }],
    [{ platform: 'Chrome OS', platformVersion: '15633.69.0', mobile: false }, { os: 'chromeos', device_kind: 'desktop' }],
    [{ platform: 'Linux', platformVersion: '6.5.0', mobile: false }, { os: 'linux', os_version: '6.5', device_kind: 'desktop' }],
    [{ platform: 'Linux', platformVersion: '', mobile: false }, { os: 'linux', device_kind: 'desktop' }],
    [{ platform: 'Unknown', platformVersion: '', mobile: false }, undefined],
    [{}, undefined],
  ];
  for (const [hints, want] of table) {
    test(JSON.stringify(hints), () => {
      const got = clientFromHints(hints);
      assert.deepEqual(got, want);
      if (got) assertDerived(got);
    });
  }
});

describe('clientFromNode', () => {
  const table: [string, string, Client][] = [
    ['win32', '10.0.22631', { os: 'windows', os_version: '11', device_kind: 'other' }],
    ['win32', '10.0.19045', { os: 'windows', os_version: '10', device_kind: 'other' }],
    ['win32', '6.3.9600', { os: 'windows', os_version: '8.1', device_kind: 'other' }],
    ['darwin', '19.6.0', { os: 'macos', os_version: '10.15', device_kind: 'other' }],
    ['darwin', '23.4.0', { os: 'macos', os_version: '14', device_kind: 'other' }],
    ['darwin', '24.1.0', { os: 'macos', os_version: '15', device_kind: 'other' }],
    ['darwin', '25.0.0', { os: 'macos', os_version: '26', device_kind: 'other' }],
    ['linux', '6.8.0-45-generic', { os: 'linux', os_version: '6', device_kind: 'other' }],
    ['linux', '5.15.153.1-microsoft-standard-WSL2', { os: 'linux', os_version: '5', device_kind: 'other' }],
    ['linux', '', { os: 'linux', device_kind: 'other' }],
    ['android', '5.10.198-android13-4', { os: 'android', device_kind: 'other' }],
    ['freebsd', '14.0-RELEASE', { os: 'other', device_kind: 'other' }],
  ];
  for (const [platform, release, want] of table) {
    test(`${platform} ${release}`, () => {
      const got = clientFromNode(platform, release);
      assert.deepEqual(got, want);
      assertDerived(got);
    });
  }

  test('detectClient reads this process', async () => {
    const c = await detectClient();
    assertDerived(c);
    const os = { win32: 'windows', darwin: 'macos', linux: 'linux' }[process.platform as string] ?? 'other';
    assert.equal(c.os, os);
    assert.deepEqual(detectClientEnv(), { client_kind: 'api', browser: 'none' });
  });
});

test('browserFromBrands', () => {
  assert.equal(browserFromBrands([{ brand: 'Chromium' }, { brand: 'Google Chrome' }, { brand: 'Not-A.Brand' }]), 'chrome');
  assert.equal(browserFromBrands([{ brand: 'Not/A)Brand' }, { brand: 'Microsoft Edge' }, { brand: 'Chromium' }]), 'edge');
  assert.equal(browserFromBrands([{ brand: 'Chromium' }, { brand: 'Brave' }]), 'other');
  assert.equal(browserFromBrands([]), undefined);
});

describe('in a browser', () => {
  const UA_WIN = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51';

  function fakeBrowser(t: { after(fn: () => void): void }, navigator: object) {
    const saved = Object.getOwnPropertyDescriptor(globalThis, 'navigator');
    Object.defineProperty(globalThis, 'navigator', { value: navigator, configurable: true, writable: true });
    (globalThis as Record<string, unknown>).document = {};
    t.after(() => {
      if (saved) Object.defineProperty(globalThis, 'navigator', saved);
      else delete (globalThis as Record<string, unknown>).navigator;
      delete (globalThis as Record<string, unknown>).document;
    });
  }

  test('prefers Client Hints, whose Windows version is not frozen', async (t) => {
    let asked: string[] = [];
    fakeBrowser(t, {
      userAgent: UA_WIN,
      userAgentData: {
        brands: [{ brand: 'Microsoft Edge' }, { brand: 'Chromium' }],
        getHighEntropyValues: async (hints: string[]) => {
          asked = hints;
          return { platform: 'Windows', platformVersion: '15.0.0', mobile: false, architecture: 'x86', model: '', uaFullVersion: '124.0.2478.51' };
        },
      },
    });
    assert.deepEqual(await detectClient(), { os: 'windows', os_version: '11', device_kind: 'desktop' });
    assert.deepEqual(asked, ['platform', 'platformVersion', 'mobile']);
    assert.deepEqual(detectClientEnv(), { client_kind: 'browser', browser: 'edge' });
  });

  test('falls back to the UA string when hints are refused', async (t) => {
    fakeBrowser(t, {
      userAgent: UA_WIN,
      userAgentData: { getHighEntropyValues: () => Promise.reject(new Error('NotAllowedError')) },
    });
    assert.deepEqual(await detectClient(), { os: 'windows', device_kind: 'desktop' });
    assert.deepEqual(detectClientEnv(), { client_kind: 'browser', browser: 'edge' });
  });

  test('tells an iPad asking for the desktop site by its touch points', async (t) => {
    fakeBrowser(t, {
      userAgent: 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15',
      maxTouchPoints: 5,
    });
    assert.deepEqual(await detectClient(), { os: 'ios', device_kind: 'tablet' });
  });

  test('events carry the hinted client and never the UA string', async (t) => {
    fakeBrowser(t, {
      userAgent: UA_WIN,
      userAgentData: {
        getHighEntropyValues: async () => ({ platform: 'Windows', platformVersion: '15.0.0', mobile: false }),
      },
    });
    const fake = new FakeCollector();
    const c = new ShukeiClient({
      endpoint: 'https://collector.example',
      token: 't',
      tenantId: 'acme-jp',
      source: 'web-sdk',
      user: 'u:1',
      fetch: fake.fetch,
      pageLifecycle: false,
      onError: (e) => assert.fail(e),
    });
    // Tracked before the hints resolve: the client is settled before the first send.
    c.trackClientEnv();
    await c.close();
    const [ev] = fake.calls[0].events;
    assert.deepEqual(ev.client, { os: 'windows', os_version: '11', device_kind: 'desktop' });
    assert.deepEqual(ev.data, { client_kind: 'browser', browser: 'edge' });
    assert.ok(!fake.calls[0].body.includes('Mozilla'));
    assert.ok(!JSON.stringify(fake.calls[0].headers).includes('Mozilla'));
  });
});
