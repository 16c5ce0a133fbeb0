// What a binary was built against, and whether that fits the libtorch in use. Each prebuilt binary is
// tagged with the libtorch version and variant in its file name (residual.napi.libtorch-2.13.0.cpu.node);
// a local build records it in build/Release/residual.json. libtorch has no stable C++ ABI: a binary
// whose tag does not match is refused with a message instead of being loaded.
import path from 'node:path';

/** What a binary was built against. variant: cpu, cuda or cuXYZ. */
export interface Tag {
  libtorch: string;
  variant: string;
}

export const KNOWN_VARIANTS = ['cpu', 'cu130'];

/** Parses "residual.napi.libtorch-2.13.0.cpu.node" into {libtorch: '2.13.0', variant: 'cpu'}. */
export function parseTag(file: string): Tag | null {
  const m = /\.libtorch-(\d+\.\d+\.\d+)\.(cpu|cuda|cu\d+)(?:\.[^.]+)*\.node$/.exec(path.basename(file));
  return m ? { libtorch: m[1], variant: m[2] } : null;
}

/** The file name a prebuilt binary gets (see scripts/release/prebuild.mjs). */
export function taggedName(tag: Tag): string {
  return `residual.napi.libtorch-${tag.libtorch}.${tag.variant}.node`;
}

/** cpu matches cpu; cuXYZ matches cuXYZ; plain "cuda" (version unknown) matches any cuXYZ. */
export function variantsMatch(a: string, b: string): boolean {
  if (a === b) return true;
  const cudaLike = (v: string) => v === 'cuda' || /^cu\d+$/.test(v);
  return (a === 'cuda' && cudaLike(b)) || (b === 'cuda' && cudaLike(a));
}

export function versionOnly(v: string): string {
  return String(v).replace(/\+.*$/, '');
}

/** Does a binary built against `tag` fit the libtorch `lt`? ('unknown' versions are left to the probe.) */
export function tagMatches(tag: Tag, lt: { version: string; variantTag: string }): boolean {
  const va = versionOnly(tag.libtorch);
  const vb = versionOnly(lt.version);
  return (va === 'unknown' || vb === 'unknown' || va === vb) && variantsMatch(tag.variant, lt.variantTag);
}

export function describeTag(t: { libtorch?: string; version?: string; variant?: string; variantTag?: string }): string {
  return `${versionOnly(t.libtorch ?? t.version ?? '?')} (${t.variantTag ?? t.variant})`;
}

/** The optional npm package that carries the prebuilt binary for a variant on a platform. */
export function variantPackageName(variant: string, platform: string = process.platform, arch: string = process.arch): string {
  return `@residual/${platform}-${arch}-${variant}`;
}
