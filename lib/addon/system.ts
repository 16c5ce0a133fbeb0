// What this system's C and C++ runtime libraries provide, against what a prebuilt binary needs. A binary
// built on a newer system asks for symbol versions (GLIBC_2.33, GLIBCXX_3.4.30) that an older glibc or
// libstdc++ lacks; dlopen then fails with "version `GLIBC_2.33' not found". A prebuilt package declares
// its floor (package.json "residual": {"glibc": "2.33", "glibcxx": "3.4.30"}), and the loader checks it
// before trying the binary, so the user reads why it cannot be used instead of a bare dlopen error.
//
// The check asks the very libraries this process runs with (found in /proc/self/maps) whether they
// define the version (the string "GLIBC_2.33" in their version definitions): the dynamic linker's own
// criterion, and a few milliseconds (process.report, the other way to read glibc's version, takes tens).
import fs from 'node:fs';

export interface SystemRequirements {
  /** Lowest glibc version, e.g. "2.33". */
  glibc?: string;
  /** Lowest libstdc++ symbol version, e.g. "3.4.30" (GLIBCXX_3.4.30: GCC 12's libstdc++). */
  glibcxx?: string;
}

export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d) return d;
  }
  return 0;
}

let mapsCache: string[] | null = null;
function mappedFile(re: RegExp): string | null {
  if (!mapsCache) {
    try {
      mapsCache = fs.readFileSync('/proc/self/maps', 'utf8').split('\n');
    } catch {
      mapsCache = [];
    }
  }
  const line = mapsCache.find((l) => re.test(l));
  return line ? line.slice(line.indexOf('/')) : null;
}

const fileCache = new Map<string, Buffer | null>();
function readOnce(file: string): Buffer | null {
  if (!fileCache.has(file)) {
    try {
      fileCache.set(file, fs.readFileSync(file));
    } catch {
      fileCache.set(file, null);
    }
  }
  return fileCache.get(file) ?? null;
}

/** The libc and libstdc++ files this process runs with (null where not found: not glibc, or static). */
export function runtimeLibraries(): { libc: string | null; libstdcxx: string | null } {
  return { libc: mappedFile(/\/libc\.so\.6$/), libstdcxx: mappedFile(/\/libstdc\+\+\.so\.6(\.[\d.]+)?$/) };
}

/** glibc's version as the running process sees it ("2.36"), or null (not glibc, or not Linux). */
export function glibcVersion(): string | null {
  if (process.platform !== 'linux') return null;
  try {
    const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
    return header?.glibcVersionRuntime ?? null;
  } catch {
    return null;
  }
}

/** The highest GLIBCXX_3.4.N the running libstdc++ defines ("3.4.30"), or null. */
export function glibcxxVersion(): string | null {
  const f = runtimeLibraries().libstdcxx;
  const buf = f ? readOnce(f) : null;
  if (!buf) return null;
  let best: string | null = null;
  for (const m of buf.toString('latin1').matchAll(/GLIBCXX_(3\.4(?:\.\d+)?)\0/g)) if (!best || compareVersions(m[1], best) > 0) best = m[1];
  return best;
}

function defines(file: string | null, version: string): boolean | null {
  const buf = file ? readOnce(file) : null;
  return buf ? buf.includes(Buffer.from(`${version}\0`, 'latin1')) : null;
}

export interface SystemProbe {
  platform: string;
  /** Does this process's glibc define GLIBC_<v>? null: cannot tell (no glibc found). */
  hasGlibc(v: string): boolean | null;
  hasGlibcxx(v: string): boolean | null;
  glibcVersion(): string | null;
  glibcxxVersion(): string | null;
}

export const thisSystem: SystemProbe = {
  platform: process.platform,
  hasGlibc: (v) => defines(runtimeLibraries().libc, `GLIBC_${v}`),
  hasGlibcxx: (v) => defines(runtimeLibraries().libstdcxx, `GLIBCXX_${v}`),
  glibcVersion,
  glibcxxVersion,
};

/**
 * Why this system cannot run a binary with these requirements, or null when it can (or when it
 * cannot be told: then loading it decides).
 */
export function unmetRequirements(req: SystemRequirements | null | undefined, sys: SystemProbe = thisSystem): string | null {
  if (!req || sys.platform !== 'linux') return null;
  const why: string[] = [];
  if (req.glibc) {
    const ok = sys.hasGlibc(req.glibc);
    if (ok === false) why.push(`glibc ${req.glibc} or newer (this system has glibc ${sys.glibcVersion() ?? 'older'})`);
    else if (ok === null && !sys.glibcVersion())
      why.push(
        `glibc ${req.glibc} or newer (this system's C library is not glibc: musl, e.g. Alpine, is not supported by prebuilt binaries)`,
      );
  }
  if (req.glibcxx && sys.hasGlibcxx(req.glibcxx) === false) {
    const have = sys.glibcxxVersion();
    why.push(`libstdc++ with GLIBCXX_${req.glibcxx} (GCC 12's or newer; this system's has ${have ? `GLIBCXX_${have}` : 'an older one'})`);
  }
  return why.length ? `needs ${why.join(' and ')}` : null;
}
