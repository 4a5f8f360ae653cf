// Pure mappings from what a runtime tells about itself to the contract's
// `client` and browser family. Only enumerations and a short numeric version
// come out; the user-agent string itself never leaves these functions, because
// it is free text and, with its build numbers, a fingerprint.

import type { Browser, Client, DeviceKind, OS } from './schema.js';

/**
 * `major` or `major.minor` from a dotted or underscored version, or undefined
 * when there is none or it does not look like a version. A `.0` minor is
 * dropped so that `14`, `14.0` and `14.0.0` all count as one version.
 */
export function shortVersion(raw: string | undefined): string | undefined {
  const m = raw === undefined ? null : /^([0-9]{1,4})(?:[._]([0-9]{1,4}))?(?:[._][0-9]+)*$/.exec(raw.trim());
  if (!m) return undefined;
  const major = String(Number(m[1]));
  return m[2] === undefined || Number(m[2]) === 0 ? major : `${major}.${Number(m[2])}`;
}

const client = (os: OS, device_kind: DeviceKind, version?: string): Client =>
  version === undefined ? { os, device_kind } : { os, os_version: version, device_kind };

// Windows NT kernel versions whose marketing version is unambiguous. NT 10.0
// is Windows 10 and Windows 11 alike, so it maps to nothing rather than to a
// guess that would count every Windows 11 user as Windows 10.
const WINDOWS_NT: Record<string, string> = { '6.1': '7', '6.2': '8', '6.3': '8.1' };

/**
 * The `client` of an HTTP User-Agent string. Browsers freeze parts of it
 * (macOS at 10.15.7, Android at 10 with model "K", ChromeOS's build, iOS 26 at
 * 18.6), so a frozen version is omitted, and so is anything not numeric.
 */
export function clientFromUserAgent(ua: string): Client {
  let m: RegExpExecArray | null;
  if (/\biPad\b/.test(ua)) {
    return client('ios', 'tablet', iosVersion(ua));
  }
  if (/\b(iPhone|iPod)\b/.test(ua)) {
    return client('ios', 'mobile', iosVersion(ua));
  }
  if ((m = /\bAndroid(?:\s+([0-9][0-9._]*))?/.exec(ua))) {
    // Firefox says "Tablet", Chrome just leaves out "Mobile" on tablets.
    const kind: DeviceKind = /\bMobile\b/.test(ua) && !/\bTablet\b/.test(ua) ? 'mobile' : 'tablet';
    const frozen = /\bAndroid 10; K\)/.test(ua);
    return client('android', kind, frozen ? undefined : shortVersion(m[1]));
  }
  if (/\bCrOS\b/.test(ua)) {
    return client('chromeos', 'desktop');
  }
  if ((m = /\bWindows NT ([0-9]+\.[0-9]+)/.exec(ua))) {
    return client('windows', 'desktop', WINDOWS_NT[m[1]]);
  }
  if (/\bWindows\b/.test(ua)) {
    return client('windows', 'desktop');
  }
  if ((m = /\bMac OS X(?: ([0-9]+[._][0-9._]+))?/.exec(ua)) || /\bMacintosh\b/.test(ua)) {
    const v = shortVersion(m?.[1]);
    return client('macos', 'desktop', v === '10.15' ? undefined : v);
  }
  if (/\b(Linux|X11)\b/.test(ua)) {
    return client('linux', 'desktop');
  }
  return client('other', 'other');
}

function iosVersion(ua: string): string | undefined {
  const v = shortVersion(/\bOS ([0-9]+_[0-9_]+|[0-9]+)\b/.exec(ua)?.[1]);
  // From iOS 26 Safari reports the OS as 18.6; its own version, which on iOS
  // ships with and is numbered like the OS, tells the truth.
  const safari = shortVersion(/\bVersion\/([0-9.]+)/.exec(ua)?.[1]);
  if (v === '18.6' && safari !== undefined && Number(safari.split('.')[0]) >= 26) return safari;
  return v;
}

/** The browser family of a User-Agent string; `other` when unsure. */
export function browserFromUserAgent(ua: string): Browser {
  if (/\b(Edg|EdgA|EdgiOS|Edge)\//.test(ua)) return 'edge';
  // Chromium- and WebKit-based browsers that carry Chrome's or Safari's tokens.
  if (/\b(OPR|Opera|SamsungBrowser|YaBrowser|UCBrowser|Vivaldi|Whale)\b/.test(ua)) return 'other';
  if (/\b(Firefox|FxiOS)\//.test(ua)) return 'firefox';
  if (/\b(Chrome|CriOS)\//.test(ua)) return 'chrome';
  if (/\bVersion\/[0-9.]+.*\bSafari\//.test(ua)) return 'safari';
  return 'other';
}

/** The User-Agent Client Hints the SDK reads, and nothing more. */
export interface UAHints {
  platform?: string;
  platformVersion?: string;
  mobile?: boolean;
}

/**
 * The `client` of User-Agent Client Hints (`navigator.userAgentData`). Unlike
 * the UA string, the hints' platform version is not frozen; on Windows it is
 * the UniversalApiContract version, 13 and up meaning Windows 11.
 */
export function clientFromHints(h: UAHints): Client | undefined {
  const mobile = h.mobile === true;
  const v = shortVersion(h.platformVersion);
  switch (h.platform) {
    case 'Windows': {
      const major = Number(v?.split('.')[0]);
      return client('windows', 'desktop', major >= 13 ? '11' : major >= 1 ? '10' : undefined);
    }
    case 'macOS':
      return client('macos', 'desktop', v);
    case 'iOS':
      return client('ios', mobile ? 'mobile' : 'tablet', v);
    case 'Android':
      return client('android', mobile ? 'mobile' : 'tablet', v);
    case 'Chrome OS':
    case 'ChromeOS':
      return client('chromeos', 'desktop', v);
    case 'Linux':
      return client('linux', mobile ? 'mobile' : 'desktop', v);
  }
  return undefined;
}

/** Brands of `navigator.userAgentData.brands`, which every Chromium browser sends. */
export function browserFromBrands(brands: readonly { brand: string }[]): Browser | undefined {
  const names = brands.map((b) => b.brand);
  if (names.includes('Microsoft Edge')) return 'edge';
  if (names.includes('Google Chrome')) return 'chrome';
  // Opera, Brave, Samsung Internet and friends name themselves, or only Chromium.
  return names.some((n) => n === 'Chromium') ? 'other' : undefined;
}

/**
 * The `client` of a Node.js process from `process.platform` and `os.release()`.
 * Node's release is the kernel's: on macOS the Darwin version, on Windows the
 * NT version with the build that tells Windows 11 apart.
 */
export function clientFromNode(platform: string, release: string): Client {
  const m = /^([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?/.exec(release);
  const [major, minor, build] = [1, 2, 3].map((i) => Number(m?.[i] ?? NaN));
  switch (platform) {
    case 'win32': {
      if (major === 10) return client('windows', 'other', build >= 22000 ? '11' : '10');
      return client('windows', 'other', WINDOWS_NT[`${major}.${minor}`]);
    }
    case 'darwin': {
      // Darwin 20..24 are macOS 11..15; Darwin 25 is macOS 26, when Apple
      // moved to year numbers; Darwin 19 and before are 10.x.
      let v: string | undefined;
      if (major >= 25) v = String(major + 1);
      else if (major >= 20) v = String(major - 9);
      else if (major >= 5) v = `10.${major - 4}`;
      return client('macos', 'other', v);
    }
    case 'linux':
      return client('linux', 'other', shortVersion(String(major)));
    case 'android':
      return client('android', 'other');
  }
  return client('other', 'other');
}
