// Turns the cmake-js build (build/Release/residual.node) into a prebuilt binary, in prebuildify's
// layout and as an optional per-platform, per-variant npm package:
//
//   <out>/prebuilds/<platform>-<arch>/residual.napi.libtorch-<version>.<variant>.node
//   <out>/npm/@residual/<platform>-<arch>-<variant>/{package.json, README.md, residual.napi...node}
//
//   node scripts/release/prebuild.mjs [--addon build/Release/residual.node] [--out DIR (default: the repo)]
//
// Releasing: publish each npm/@residual/* package first, then list them in residual's
// optionalDependencies (exact version) and update the lock; npm ci fails on optional dependencies
// that are not on the registry, so the repository does not list them before that.
//
// prebuildify itself drives node-gyp, which cannot build against libtorch's CMake package, so this
// script produces the same layout from our cmake-js build. The variant is cpu or cuXYZ (the CUDA
// version of the libtorch it was built against), the version is libtorch's X.Y.Z: the loader refuses
// a binary whose tag does not match the libtorch in use.
//
// The build's RUNPATH points at this machine's libtorch folder; a prebuilt binary must not depend on
// (or leak) that path, so it is rewritten to $ORIGIN. At run time the loader preloads libtorch from
// the resolved folder instead (lib/addon/load.ts). The script checks both: the copy loads with the
// preload and does not load without it.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

function fail(msg) {
  console.error(`[residual] prebuild: ${msg}`);
  process.exit(1);
}

// ---- ELF: rewrite DT_RUNPATH / DT_RPATH in place -------------------------------------------------

const SHT_DYNAMIC = 6;
const SHT_DYNSYM = 11;
const SHT_GNU_VERDEF = 0x6ffffffd;
const SHT_GNU_VERNEED = 0x6ffffffe;
const DT_NEEDED = 1;
const DT_SONAME = 14;
const DT_RPATH = 15;
const DT_RUNPATH = 29;

function sections(buf) {
  const shoff = Number(buf.readBigUInt64LE(0x28));
  const shentsize = buf.readUInt16LE(0x3a);
  const shnum = buf.readUInt16LE(0x3c);
  const out = [];
  for (let i = 0; i < shnum; i++) {
    const o = shoff + i * shentsize;
    out.push({
      type: buf.readUInt32LE(o + 4),
      offset: Number(buf.readBigUInt64LE(o + 0x18)),
      size: Number(buf.readBigUInt64LE(o + 0x20)),
      link: buf.readUInt32LE(o + 0x28),
      info: buf.readUInt32LE(o + 0x2c),
      entsize: Number(buf.readBigUInt64LE(o + 0x38)),
    });
  }
  return out;
}

/**
 * Replaces the RUNPATH (and RPATH) string of a 64-bit little-endian ELF shared object with
 * `replacement` (which must not be longer), padding with NULs so that no offset moves. Refuses if
 * another string reference points inside the old string (the linker may share string tails).
 * Returns the old value, or null when the file has no RUNPATH/RPATH.
 */
export function rewriteRunpath(buf, replacement = '$ORIGIN') {
  if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46) throw new Error('not an ELF file');
  if (buf[4] !== 2 || buf[5] !== 1) throw new Error('only 64-bit little-endian ELF files are supported');
  const secs = sections(buf);
  const dyn = secs.find((s) => s.type === SHT_DYNAMIC);
  if (!dyn) throw new Error('no dynamic section');
  const strtab = secs[dyn.link];
  const refs = [];
  const targets = [];
  for (let o = dyn.offset; o + 16 <= dyn.offset + dyn.size; o += 16) {
    const tag = Number(buf.readBigInt64LE(o));
    if (tag === 0) break;
    const val = Number(buf.readBigUInt64LE(o + 8));
    if (tag === DT_RUNPATH || tag === DT_RPATH) targets.push(val);
    else if (tag === DT_NEEDED || tag === DT_SONAME || tag === 0x7ffffffd || tag === 0x7fffffff) refs.push(val);
  }
  if (!targets.length) return null;
  for (const s of secs) {
    if (s.link !== dyn.link) continue;
    if (s.type === SHT_DYNSYM) {
      for (let o = s.offset; o < s.offset + s.size; o += s.entsize || 24) refs.push(buf.readUInt32LE(o));
    } else if (s.type === SHT_GNU_VERNEED) {
      let o = s.offset;
      for (let i = 0; i < s.info; i++) {
        refs.push(buf.readUInt32LE(o + 4));
        let a = o + buf.readUInt32LE(o + 8);
        for (let j = 0; j < buf.readUInt16LE(o + 2); j++) {
          refs.push(buf.readUInt32LE(a + 8));
          a += buf.readUInt32LE(a + 12);
        }
        o += buf.readUInt32LE(o + 12);
      }
    } else if (s.type === SHT_GNU_VERDEF) {
      let o = s.offset;
      for (let i = 0; i < s.info; i++) {
        let a = o + buf.readUInt32LE(o + 12);
        for (let j = 0; j < buf.readUInt16LE(o + 6); j++) {
          refs.push(buf.readUInt32LE(a));
          a += buf.readUInt32LE(a + 4);
        }
        o += buf.readUInt32LE(o + 16);
      }
    }
  }
  let old = null;
  for (const t of new Set(targets)) {
    const start = strtab.offset + t;
    const end = buf.indexOf(0, start);
    old = buf.toString('utf8', start, end);
    const clash = refs.find((r) => r >= t && r < t + (end - start));
    if (clash !== undefined) throw new Error(`another string shares the RUNPATH bytes (offset ${clash}); use patchelf instead`);
    const rep = Buffer.from(replacement);
    if (rep.length > end - start) throw new Error('the replacement RUNPATH is longer than the original');
    buf.fill(0, start, end);
    rep.copy(buf, start);
  }
  return old;
}

// ---- bundled shared libraries -------------------------------------------------------------------

/** Copies the image libraries the addon links (libjpeg, libpng) into dir; returns their file names. */
export function bundleImageLibs(addon, dir) {
  if (process.platform !== 'linux') return [];
  const r = spawnSync('ldd', [addon], { encoding: 'utf8' });
  if (r.status !== 0) fail(`ldd ${addon} failed: ${r.stderr}`);
  const out = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*((libjpeg|libpng16)\.so\.\d+)\s+=>\s+(\S+)/.exec(line);
    if (!m) continue;
    if (m[3] === 'not' || !fs.existsSync(m[3])) fail(`${m[1]} is not found for ${addon}: install libjpeg-turbo and libpng`);
    fs.copyFileSync(fs.realpathSync(m[3]), path.join(dir, m[1]));
    out.push(m[1]);
  }
  if (out.length !== 2) fail(`expected the addon to link libjpeg and libpng16, found: ${out.join(', ') || 'neither'}`);
  return out;
}

// ---- main ---------------------------------------------------------------------------------------

async function main() {
  const addon = path.resolve(arg('--addon', path.join(root, 'build', 'Release', 'residual.node')));
  const out = path.resolve(arg('--out', root));
  if (!fs.existsSync(addon)) fail(`${addon} does not exist; build it first with: node scripts/install/build.mjs --native-only`);
  const loaderJs = path.join(root, 'dist', 'addon', 'load.js');
  if (!fs.existsSync(loaderJs))
    fail('dist/addon/load.js is missing; compile the TypeScript first: node scripts/install/build.mjs --ts-only');
  const L = await import(pathToFileURL(loaderJs).href);
  const { describeLibtorch, findLibtorch } = await import(pathToFileURL(path.join(root, 'dist', 'addon', 'libtorch.js')).href);

  // The libtorch it was built against: recorded by scripts/install/build.mjs next to the binary.
  let side = null;
  try {
    side = JSON.parse(fs.readFileSync(addon.replace(/\.node$/, '.json'), 'utf8'));
  } catch {
    /* older builds */
  }
  const lt = side?.libtorchDir && fs.existsSync(side.libtorchDir) ? describeLibtorch(side.libtorchDir) : findLibtorch({ quiet: true });
  if (!lt) fail('cannot tell which libtorch the addon was built against (no residual.json and no libtorch found)');

  const orig = L.probeInChild({ path: addon, how: 'build', tag: null, libtorch: lt, preload: false });
  if (!orig.ok) fail(`the build does not load: ${orig.error}`);
  const info = orig.info;
  if (!L.variantsMatch(info.variant, lt.variantTag)) fail(`the addon says variant ${info.variant} but ${lt.dir} is ${lt.variantTag}`);
  const tag = { libtorch: String(info.libtorch).replace(/\+.*$/, ''), variant: lt.variantTag };
  if (tag.libtorch !== lt.version) fail(`the addon was built against libtorch ${tag.libtorch} but ${lt.dir} is ${lt.version}`);

  const buf = fs.readFileSync(addon);
  const oldRunpath = rewriteRunpath(buf, '$ORIGIN');
  const platformArch = `${process.platform}-${process.arch}`;
  const fileName = L.taggedName(tag);

  const preDir = path.join(out, 'prebuilds', platformArch);
  fs.mkdirSync(preDir, { recursive: true });
  const pre = path.join(preDir, fileName);
  const { writeFileAtomic } = await import(pathToFileURL(path.join(root, 'dist', 'core', 'fs.js')).href);
  writeFileAtomic(pre, buf, { mode: 0o755 });
  // The image decoders (native/image/codec.cpp) travel with the binary: the build machine's libjpeg-turbo
  // and libpng, found through $ORIGIN. zlib (libpng's own dependency) is part of every Linux system.
  const bundled = bundleImageLibs(addon, preDir);

  // Evidence that the copy is self-contained: it loads with the preload, and not without it.
  const withPreload = L.probeInChild({ path: pre, how: 'prebuilt', tag, libtorch: lt, preload: true });
  if (!withPreload.ok) fail(`the prebuilt copy does not load with libtorch preloaded: ${withPreload.error}`);
  const without = L.probeInChild({ path: pre, how: 'prebuilt', tag, libtorch: lt, preload: false });
  const selfContained = !without.ok;

  // The optional package for this platform and variant.
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  const name = L.variantPackageName(tag.variant);
  const pkgDir = path.join(out, 'npm', ...name.split('/'));
  fs.rmSync(pkgDir, { recursive: true, force: true });
  fs.mkdirSync(pkgDir, { recursive: true });
  fs.copyFileSync(pre, path.join(pkgDir, fileName));
  for (const f of bundled) fs.copyFileSync(path.join(preDir, f), path.join(pkgDir, f));
  const variantPkg = {
    name,
    version: pkg.version,
    description: `residual's native addon for ${platformArch}, built against libtorch ${tag.libtorch} (${tag.variant}). Installed by residual as an optional dependency; libtorch itself is resolved or fetched by residual's install script.`,
    license: pkg.license,
    os: [process.platform],
    cpu: [process.arch],
    ...(process.platform === 'linux' ? { libc: ['glibc'] } : {}),
    files: [fileName, ...bundled, 'README.md'],
    residual: { libtorch: tag.libtorch, variant: tag.variant, napiVersion: info.napiVersion },
  };
  fs.writeFileSync(path.join(pkgDir, 'package.json'), JSON.stringify(variantPkg, null, 2) + '\n');
  fs.writeFileSync(
    path.join(pkgDir, 'README.md'),
    `# ${name}\n\nThe prebuilt native addon of [residual](https://www.npmjs.com/package/residual) for ${platformArch}, ` +
      `built against libtorch ${tag.libtorch} (${tag.variant}).\nDo not install it directly: \`npm install residual\` picks it up.\n`,
  );

  const want = pkg.optionalDependencies?.[name];
  console.log(`[residual] prebuilt ${path.relative(process.cwd(), pre) || pre}`);
  console.log(
    `  built against libtorch ${tag.libtorch} (${tag.variant}), Node-API ${info.napiVersion}; ${(buf.length / 1e6).toFixed(2)} MB`,
  );
  console.log(`  bundled beside it: ${bundled.join(', ') || '(nothing)'}`);
  console.log(`  RUNPATH ${oldRunpath === null ? '(none)' : JSON.stringify(oldRunpath)} -> "$ORIGIN"`);
  console.log(
    `  loads with libtorch preloaded from ${lt.lib}: yes; without the preload: ${selfContained ? 'no (as it should: no build-machine path left)' : 'YES (libtorch is still on the default library path)'}`,
  );
  console.log(`[residual] optional package ${name}@${pkg.version} in ${path.relative(process.cwd(), pkgDir) || pkgDir}`);
  if (want !== pkg.version) {
    console.log(`  to release: publish it (npm publish ${path.relative(process.cwd(), pkgDir) || '.'} --access public), then add`);
    console.log(`  "${name}": "${pkg.version}" to optionalDependencies in package.json and run npm install --package-lock-only`);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => fail(e.stack || e.message));
}
