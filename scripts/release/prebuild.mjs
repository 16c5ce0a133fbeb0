// Turns a cmake-js build (build/Release/residual.node) into a prebuilt binary, in prebuildify's layout
// and as the optional per-platform, per-variant npm package that `npm run release` publishes
// (scripts/release/release.mjs):
//
//   <out>/prebuilds/<platform>-<arch>/residual.napi.libtorch-<version>.<variant>.node
//   <out>/npm/@residual/<platform>-<arch>-<variant>/{package.json, README.md, residual.napi...node, libjpeg.so.62, libpng16.so.16}
//
//   node scripts/release/prebuild.mjs [--addon build/Release/residual.node] [--out DIR (default: the repo)] [--no-strip]
//
// prebuildify itself drives node-gyp, which cannot build against libtorch's CMake package, so this
// script produces the same layout from our cmake-js build. The variant is cpu or cuXYZ (the CUDA
// version of the libtorch it was built against), the version is libtorch's X.Y.Z: the loader refuses
// a binary whose tag does not match the libtorch in use.
//
// What is done to the copy (the build itself is left as it is):
//   - `strip --strip-unneeded` (binutils): the symbol table and debug sections go; what the dynamic
//     linker needs stays.
//   - RUNPATH: the build's points at this machine's libtorch folder; a prebuilt binary must not depend
//     on (or leak) that path, so it is rewritten to $ORIGIN (where the bundled libjpeg/libpng lie). At
//     run time the loader preloads libtorch from the resolved folder instead (lib/addon/probe.ts).
//   - The package declares what the system must provide, read from the ELF files themselves (the
//     symbol versions the addon and the bundled libraries need, scripts/release/elf.mjs): npm's `os`,
//     `cpu` and `libc` fields, and "residual": {"glibc": "X.Y", "glibcxx": "3.4.N"}, which the loader
//     checks before trying the binary (lib/addon/candidates.ts, lib/addon/system.ts).
// Then the package's copy is loaded in a child process with libtorch preloaded (it must load) and
// without the preload (it should not: no build-machine path left).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dynamicInfo, hasSymtab, rewriteRunpath, systemFloor, versionNeeds } from './elf.mjs';

export { rewriteRunpath };

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export class PrebuildError extends Error {}

/** Copies the image libraries the addon links (libjpeg, libpng) into dir; returns their file names. */
export function bundleImageLibs(addon, dir) {
  if (process.platform !== 'linux') return [];
  const r = spawnSync('ldd', [addon], { encoding: 'utf8' });
  if (r.status !== 0) throw new PrebuildError(`ldd ${addon} failed: ${r.stderr || r.error?.message}`);
  const out = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*((libjpeg|libpng16)\.so\.\d+)\s+=>\s+(\S+)/.exec(line);
    if (!m) continue;
    if (m[3] === 'not' || !fs.existsSync(m[3]))
      throw new PrebuildError(`${m[1]} is not found for ${addon}: install libjpeg-turbo and libpng`);
    fs.copyFileSync(fs.realpathSync(m[3]), path.join(dir, m[1]));
    out.push(m[1]);
  }
  if (out.length !== 2) throw new PrebuildError(`expected the addon to link libjpeg and libpng16, found: ${out.join(', ') || 'neither'}`);
  return out;
}

/** `strip --strip-unneeded` on a copy; returns the stripped bytes. */
function stripped(file, tmpDir) {
  const tmp = path.join(tmpDir, `.strip-${process.pid}-${path.basename(file)}`);
  fs.copyFileSync(file, tmp);
  try {
    const r = spawnSync('strip', ['--strip-unneeded', tmp], { encoding: 'utf8' });
    if (r.error?.code === 'ENOENT') throw new PrebuildError('strip is not installed (binutils: apt-get install binutils)');
    if (r.status !== 0) throw new PrebuildError(`strip --strip-unneeded ${file} failed: ${r.stderr.trim()}`);
    return fs.readFileSync(tmp);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

const dist = (rel) => import(pathToFileURL(path.join(root, 'dist', ...rel.split('/'))).href);

/**
 * Makes the optional package for one build. Returns what it did (sizes, tag, floor, checks).
 * `version`: the package version (residual's). Throws PrebuildError when a check fails.
 */
export async function makePlatformPackage({ addon, out, version, strip = true, log = () => {} }) {
  if (!fs.existsSync(addon))
    throw new PrebuildError(`${addon} does not exist; build it first with: node scripts/install/build.mjs --native-only`);
  if (!fs.existsSync(path.join(root, 'dist', 'addon', 'load.js')))
    throw new PrebuildError('dist/addon/load.js is missing; compile the TypeScript first: node scripts/install/build.mjs --ts-only');
  const L = await dist('addon/load.js');
  const { describeLibtorch, findLibtorch } = await dist('addon/libtorch.js');
  const { writeFileAtomic } = await dist('core/fs.js');
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  version ??= pkg.version;

  // The libtorch it was built against: recorded by scripts/install/build.mjs next to the binary.
  let side = null;
  try {
    side = JSON.parse(fs.readFileSync(addon.replace(/\.node$/, '.json'), 'utf8'));
  } catch {
    /* older builds */
  }
  const lt = side?.libtorchDir && fs.existsSync(side.libtorchDir) ? describeLibtorch(side.libtorchDir) : findLibtorch({ quiet: true });
  if (!lt) throw new PrebuildError('cannot tell which libtorch the addon was built against (no residual.json and no libtorch found)');

  const orig = L.probeInChild({ path: addon, how: 'build', tag: null, libtorch: lt, preload: false });
  if (!orig.ok) throw new PrebuildError(`the build does not load: ${orig.error}`);
  const info = orig.info;
  if (!L.variantsMatch(info.variant, lt.variantTag))
    throw new PrebuildError(`the addon says variant ${info.variant} but ${lt.dir} is ${lt.variantTag}`);
  const tag = { libtorch: String(info.libtorch).replace(/\+.*$/, ''), variant: lt.variantTag };
  if (tag.libtorch !== lt.version)
    throw new PrebuildError(`the addon was built against libtorch ${tag.libtorch} but ${lt.dir} is ${lt.version}`);

  const builtBytes = fs.statSync(addon).size;
  const buf = strip ? stripped(addon, path.dirname(addon)) : fs.readFileSync(addon);
  const oldRunpath = rewriteRunpath(buf, '$ORIGIN');
  const dyn = dynamicInfo(buf);
  if (dyn.runpath !== '$ORIGIN') throw new PrebuildError(`the RUNPATH of the copy is ${JSON.stringify(dyn.runpath)}, not "$ORIGIN"`);
  if (strip && hasSymtab(buf)) throw new PrebuildError('the stripped copy still has a symbol table');
  const platformArch = `${process.platform}-${process.arch}`;
  const fileName = L.taggedName(tag);

  const preDir = path.join(out, 'prebuilds', platformArch);
  fs.mkdirSync(preDir, { recursive: true });
  const pre = path.join(preDir, fileName);
  writeFileAtomic(pre, buf, { mode: 0o755 });
  // The image decoders (native/image/codec.cpp) travel with the binary: the build machine's libjpeg-turbo
  // and libpng, found through $ORIGIN. zlib (libpng's own dependency) is part of every Linux system.
  const bundled = bundleImageLibs(addon, preDir);

  // What the system must provide: the highest glibc and libstdc++ symbol versions that the addon or a
  // bundled library needs (libtorch's own floor is lower: its wheels are manylinux_2_28).
  const needs = { [fileName]: versionNeeds(buf) };
  for (const f of bundled) needs[f] = versionNeeds(fs.readFileSync(path.join(preDir, f)));
  const floor = process.platform === 'linux' ? systemFloor(...Object.values(needs)) : {};
  if (floor.glibc && !/^\d+\.\d+$/.test(floor.glibc))
    throw new PrebuildError(`glibc floor ${floor.glibc} is not X.Y (what the loader reads)`);
  if (floor.glibcxx && !/^\d+\.\d+\.\d+$/.test(floor.glibcxx))
    throw new PrebuildError(`GLIBCXX floor ${floor.glibcxx} is not 3.4.N (what the loader reads)`);

  // The optional package for this platform and variant.
  const name = L.variantPackageName(tag.variant);
  const pkgDir = path.join(out, 'npm', ...name.split('/'));
  fs.rmSync(pkgDir, { recursive: true, force: true });
  fs.mkdirSync(pkgDir, { recursive: true });
  fs.copyFileSync(pre, path.join(pkgDir, fileName));
  fs.chmodSync(path.join(pkgDir, fileName), 0o755);
  for (const f of bundled) fs.copyFileSync(path.join(preDir, f), path.join(pkgDir, f));
  const floorText = [floor.glibc && `glibc ${floor.glibc}`, floor.glibcxx && `libstdc++ with GLIBCXX_${floor.glibcxx}`]
    .filter(Boolean)
    .join(' and ');
  const variantPkg = {
    name,
    version,
    description: `residual's native addon for ${platformArch}, built against libtorch ${tag.libtorch} (${tag.variant})${floorText ? `; needs ${floorText} or newer` : ''}. Installed by residual as an optional dependency; libtorch itself is resolved or fetched by residual.`,
    license: pkg.license,
    ...(pkg.repository ? { repository: pkg.repository } : {}),
    os: [process.platform],
    cpu: [process.arch],
    ...(process.platform === 'linux' ? { libc: ['glibc'] } : {}),
    files: [fileName, ...bundled, 'README.md'],
    // Read by the loader (lib/addon/candidates.ts packageRequirements): the tag, and the floor it checks.
    residual: { libtorch: tag.libtorch, variant: tag.variant, napiVersion: info.napiVersion, ...floor },
  };
  fs.writeFileSync(path.join(pkgDir, 'package.json'), JSON.stringify(variantPkg, null, 2) + '\n');
  fs.writeFileSync(
    path.join(pkgDir, 'README.md'),
    `# ${name}\n\nThe prebuilt native addon of [residual](https://www.npmjs.com/package/residual) for ${platformArch}, ` +
      `built against libtorch ${tag.libtorch} (${tag.variant}).\n` +
      (floorText ? `It needs ${floorText} or newer (residual checks this before loading it).\n` : '') +
      `Do not install it directly: \`npm install residual\` picks it up.\n`,
  );

  // Evidence that the package's copy is self-contained: it loads with the preload, and not without it.
  const shipped = path.join(pkgDir, fileName);
  const withPreload = L.probeInChild({ path: shipped, how: 'prebuilt', tag, libtorch: lt, preload: true });
  if (!withPreload.ok) throw new PrebuildError(`the prebuilt copy does not load with libtorch preloaded: ${withPreload.error}`);
  const without = L.probeInChild({ path: shipped, how: 'prebuilt', tag, libtorch: lt, preload: false });
  const selfContained = !without.ok;

  const r = {
    name,
    version,
    pkgDir,
    file: shipped,
    fileName,
    tag,
    napiVersion: info.napiVersion,
    builtBytes,
    bytes: buf.length,
    stripped: strip,
    oldRunpath,
    bundled,
    needs,
    floor,
    selfContained,
    libtorch: lt,
  };
  log(
    `${name}@${version}: ${fileName} ${builtBytes.toLocaleString('en')} bytes built, ${buf.length.toLocaleString('en')} bytes ${strip ? 'stripped (strip --strip-unneeded)' : 'not stripped'}`,
  );
  log(
    `  built against libtorch ${tag.libtorch} (${tag.variant}), Node-API ${info.napiVersion}; bundled beside it: ${bundled.join(', ') || '(nothing)'}`,
  );
  log(`  RUNPATH ${oldRunpath === null ? '(none)' : JSON.stringify(oldRunpath)} -> "$ORIGIN"`);
  log(
    `  needs from the system: ${floorText || '(nothing versioned)'} (highest symbol versions needed by ${Object.keys(needs).join(', ')}); os ${process.platform}, cpu ${process.arch}${process.platform === 'linux' ? ', libc glibc' : ''}`,
  );
  log(
    `  loads with libtorch preloaded from ${lt.lib}: yes; without the preload: ${selfContained ? 'no (as it should: no build-machine path left)' : 'YES (libtorch is still on the default library path)'}`,
  );
  return r;
}

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

async function main() {
  const addon = path.resolve(arg('--addon', path.join(root, 'build', 'Release', 'residual.node')));
  const out = path.resolve(arg('--out', root));
  const r = await makePlatformPackage({
    addon,
    out,
    strip: !process.argv.includes('--no-strip'),
    log: (m) => console.log(`[residual] prebuild: ${m}`),
  });
  console.log(`[residual] optional package ${r.name}@${r.version} in ${path.relative(process.cwd(), r.pkgDir) || r.pkgDir}`);
  console.log(
    '  to publish it with residual (optionalDependencies pinned, only published variants listed): npm run release -- --registry URL',
  );
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(`[residual] prebuild: ${e instanceof PrebuildError ? e.message : e.stack || e.message}`);
    process.exit(1);
  });
}
