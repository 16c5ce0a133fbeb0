// Finds the addon binary. Order: RESIDUAL_ADDON (an explicit path), a local build
// (build/Release/residual.node, from `npm run build`), then prebuilt binaries (see scripts/prebuild).
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export interface AddonChoice {
  path: string;
  how: string;
}

export function addonCandidates(root = packageRoot): AddonChoice[] {
  const out: AddonChoice[] = [];
  if (process.env.RESIDUAL_ADDON) out.push({ path: path.resolve(process.env.RESIDUAL_ADDON), how: 'RESIDUAL_ADDON' });
  out.push({ path: path.join(root, 'build', 'Release', 'residual.node'), how: 'local build' });
  return out;
}

let chosen: AddonChoice | null = null;
export function addonChoice(): AddonChoice | null {
  return chosen;
}

export function loadAddon(): Record<string, (...args: unknown[]) => unknown> {
  const tried: string[] = [];
  for (const c of addonCandidates()) {
    if (!fs.existsSync(c.path)) {
      tried.push(`${c.path} (${c.how}): not found`);
      continue;
    }
    chosen = c;
    return require(c.path);
  }
  throw new Error(
    `residual: no native addon found. Tried:\n  ${tried.join('\n  ')}\n` +
      `Build it from source with: npm run build (needs cmake, a C++17 compiler and libtorch; see README).`,
  );
}
