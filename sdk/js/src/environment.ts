// Reads the runtime (browser or Node) to fill the envelope's `client` and
// client_env's browser family. Everything here goes through the pure
// mappings in useragent.ts; no raw string is kept.

import type { Browser, Client, ClientKind } from './schema.js';
import {
  browserFromBrands,
  browserFromUserAgent,
  clientFromHints,
  clientFromNode,
  clientFromUserAgent,
  type UAHints,
} from './useragent.js';

interface UAData {
  brands?: { brand: string }[];
  platform?: string;
  mobile?: boolean;
  getHighEntropyValues?: (hints: string[]) => Promise<UAHints>;
}
interface Nav {
  userAgent?: string;
  userAgentData?: UAData;
  maxTouchPoints?: number;
}
interface NodeProcess {
  platform?: string;
  versions?: { node?: string };
  getBuiltinModule?: (id: string) => unknown;
}

const g = globalThis as { navigator?: Nav; process?: NodeProcess; document?: unknown };

// A page first (an Electron renderer has Node's process too), then Node (which
// has a navigator of its own from version 21), then a worker's navigator.
const isNode = (): boolean => g.document === undefined && typeof g.process?.versions?.node === 'string';
const isBrowser = (): boolean => !isNode() && typeof g.navigator?.userAgent === 'string';

function fromNavigator(nav: Nav): Client {
  const c = clientFromUserAgent(nav.userAgent ?? '');
  // iPadOS asks for desktop sites with a Mac user agent; only touch support
  // gives it away. Its version then is the frozen Mac one, so none is sent.
  if (c.os === 'macos' && (nav.maxTouchPoints ?? 0) > 1) return { os: 'ios', device_kind: 'tablet' };
  return c;
}

/** A first answer without waiting, used until detectClient() resolves. */
export function detectClientSync(): Client {
  if (isBrowser()) return fromNavigator(g.navigator!);
  if (isNode()) return clientFromNode(g.process!.platform ?? '', '');
  return { os: 'other', device_kind: 'other' };
}

/**
 * The client of this runtime: Client Hints when the browser has them (their
 * platform version is not frozen), else the UA string; in Node the platform
 * and the kernel release.
 */
export async function detectClient(): Promise<Client> {
  if (isBrowser()) {
    const uad = g.navigator!.userAgentData;
    if (uad?.getHighEntropyValues) {
      try {
        const c = clientFromHints(await uad.getHighEntropyValues(['platform', 'platformVersion', 'mobile']));
        if (c) return c;
      } catch {
        // A browser may refuse high-entropy hints; the UA string still works.
      }
    }
    return fromNavigator(g.navigator!);
  }
  if (isNode()) {
    const p = g.process!;
    let os = p.getBuiltinModule?.('node:os') as { release(): string } | undefined;
    if (!os) {
      try {
        // Hidden from bundlers: this branch only ever runs in Node.
        os = await import(/* webpackIgnore: true */ /* @vite-ignore */ 'node:' + 'os');
      } catch {
        // Not really Node, or a sandbox without node:os.
      }
    }
    return clientFromNode(p.platform ?? '', os?.release() ?? '');
  }
  return { os: 'other', device_kind: 'other' };
}

/** client_env/v1's fields for this runtime. */
export function detectClientEnv(): { client_kind: ClientKind; browser: Browser } {
  if (!isBrowser()) return { client_kind: 'api', browser: 'none' };
  const nav = g.navigator!;
  const brands = nav.userAgentData?.brands;
  return { client_kind: 'browser', browser: (brands && browserFromBrands(brands)) ?? browserFromUserAgent(nav.userAgent ?? '') };
}
