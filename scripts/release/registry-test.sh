#!/usr/bin/env bash
# Releases residual to a throwaway npm registry on 127.0.0.1 (verdaccio 6, scripts/release/verdaccio.yaml)
# with `npm run release`, then installs it from there into fresh projects as users would:
#   - a user's shell: PATH is a folder holding only node, npm, npx, sh, coreutils, sed and grep (no cc,
#     c++, gcc, g++, cmake, make, python3, pip), a fresh HOME (so npm's cache, RESIDUAL_HOME's default
#     and pnpm's store start empty), nothing inherited from this machine's environment (env -i: no LIBTORCH, no PIP_FIND_LINKS,
#     no npm_config_*), PIP_CONFIG_FILE=/dev/null, the registry named in the project's .npmrc, and
#     libtorch from a local mirror of PyTorch's paths (RESIDUAL_LIBTORCH_MIRROR, laid out from this
#     machine's wheel by npm run libtorch:mirror and served on 127.0.0.1; one download reused by all steps);
#   1. npm: `npm install residual` (cold), import it and train a few steps of a ResNet, `npx residual
#      doctor`; `npm ci` from the resulting lockfile (warm: no fetch, no compile), and run time finds the
#      cached libtorch without the install's record;
#   2. pnpm 10 at its defaults (`npx pnpm@10 add residual`, build scripts not approved), as another user:
#      the import works or names `npx residual setup`, and works after it; doctor; `pnpm install
#      --frozen-lockfile` from its lockfile;
#   3. LIBTORCH named at install, remembered at run time; residual/tfjs with tfjs-core beside it;
#   4. the mirror down and no libtorch: the install fails naming what to set and run, no partial cache;
#   5. npm --ignore-scripts: the import names `npx residual setup`, doctor runs and names it, setup fixes it.
# It checks what was published (files, sizes, optionalDependencies pinned and only published variants,
# the platform package's os/cpu/libc and glibc/GLIBCXX floor against readelf, stripped, RUNPATH $ORIGIN)
# and prints times and sizes as "[registry-test]" lines.
#
#   bash scripts/release/registry-test.sh     (npm run registry-test)
# Needs: a checkout where npm install has run (its libtorch with build files, a C++ toolchain for the
# incremental build), the public npm registry (verdaccio's uplink: residual's dependencies, pnpm), and
# the pinned wheel of the cpu variant on this machine (for the mirror). KEEP=1 keeps the temporary
# folder; REGISTRY_TEST_DIR=... chooses it; RESIDUAL_CI_TOOLS=DIR keeps verdaccio installed between runs;
# RESIDUAL_BUILD_LOCK=FILE runs the release's build under flock FILE (shared build machines).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VERDACCIO=verdaccio@6.8.0 # the newest 6.x that runs on Node 20 (6.9 needs Node 22)
PNPM=pnpm@10
WORK=${REGISTRY_TEST_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/residual-registry-test.XXXXXX")}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
TOOLS=${RESIDUAL_CI_TOOLS:-$WORK/tools}
PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
T0=$EPOCHREALTIME
say() { echo "[registry-test] $*"; }
step() { printf '\n=== %s\n' "$*"; }
fail() { echo "REGISTRY TEST FAILED: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f s", b - a }'; }
mb() { awk -v n="$1" 'BEGIN { printf "%.1f MB", n / 1e6 }'; }
bytes_of() { if [ -e "$1" ]; then du -sb "$1" | cut -f1; else echo 0; fi; }
thousands() { node -p "Number($1).toLocaleString('en')"; }
free_port() { node -e "const s = require('net').createServer().listen(0, '127.0.0.1', () => { console.log(s.address().port); s.close(); })"; }
wait_url() { # URL SECONDS
  for _ in $(seq $(($2 * 5))); do
    node -e "fetch(process.argv[1]).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))" "$1" && return 0
    sleep 0.2
  done
  return 1
}

cd "$ROOT"
[ -f build/Release/residual.node ] || fail "build the addon first: npm install (or node scripts/install/build.mjs)"
VERSION=$(node -p 'require("./package.json").version')
PLATFORM=$(node -p 'process.platform + "-" + process.arch')

# ---- the registry --------------------------------------------------------------------------------
step "verdaccio on 127.0.0.1"
t=$(now)
if [ ! -x "$TOOLS/verdaccio/node_modules/.bin/verdaccio" ] || [ "$(node -p "require('$TOOLS/verdaccio/node_modules/verdaccio/package.json').version" 2>/dev/null)" != "${VERDACCIO#*@}" ]; then
  mkdir -p "$TOOLS/verdaccio"
  echo '{ "private": true }' > "$TOOLS/verdaccio/package.json"
  (cd "$TOOLS/verdaccio" && npm install --no-audit --no-fund --no-package-lock --ignore-scripts "$VERDACCIO") > "$WORK/verdaccio-install.log" 2>&1 \
    || { cat "$WORK/verdaccio-install.log"; fail "npm install $VERDACCIO"; }
  say "installed $VERDACCIO into $TOOLS/verdaccio ($(since "$t"))"
fi
REG_DIR="$WORK/registry"
mkdir -p "$REG_DIR"
cp scripts/release/verdaccio.yaml "$REG_DIR/config.yaml"
REG_PORT=$(free_port)
REGISTRY="http://127.0.0.1:$REG_PORT/"
node "$TOOLS/verdaccio/node_modules/verdaccio/bin/verdaccio" --config "$REG_DIR/config.yaml" --listen "127.0.0.1:$REG_PORT" > "$REG_DIR/verdaccio.log" 2>&1 &
PIDS+=($!)
wait_url "${REGISTRY}-/ping" 60 || { cat "$REG_DIR/verdaccio.log"; fail "verdaccio did not answer on $REGISTRY"; }
# A throwaway publisher: registered once (max_users: 1), its token only in this run's npmrc.
TOKEN=$(node -e "
  fetch(process.argv[1] + '-/user/org.couchdb.user:release-test', { method: 'PUT', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'release-test', password: require('crypto').randomBytes(18).toString('base64url') }) })
    .then(async (r) => { const j = await r.json(); if (!r.ok || !j.token) throw new Error(r.status + ' ' + JSON.stringify(j)); console.log(j.token); })
    .catch((e) => { console.error(e.message); process.exit(1); });" "$REGISTRY") || fail "could not register a user on $REGISTRY"
PUBLISH_RC="$WORK/publisher.npmrc"
printf '//127.0.0.1:%s/:_authToken=%s\n' "$REG_PORT" "$TOKEN" > "$PUBLISH_RC"
say "registry $REGISTRY (verdaccio ${VERDACCIO#*@}, storage $REG_DIR/storage) up in $(since "$t")"

# ---- the release ---------------------------------------------------------------------------------
step "npm run release -- --registry $REGISTRY"
t=$(now)
LOCK=()
[ -n "${RESIDUAL_BUILD_LOCK:-}" ] && LOCK=(flock "$RESIDUAL_BUILD_LOCK")
NPM_CONFIG_USERCONFIG="$PUBLISH_RC" "${LOCK[@]}" npm run --silent release -- --registry "$REGISTRY" --out "$WORK/release" 2>&1 | tee "$WORK/release.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail "npm run release"
say "publish: npm run release took $(since "$t")${LOCK[*]:+ (including any wait for the build lock)}: $(grep -o 'released: .* in [0-9.]* s' "$WORK/release.log") (TypeScript, incremental native build, strip, package checks, 2 publishes)"
SUMMARY="$WORK/release/release.json"
MAIN_TGZ=$(node -p "require('$SUMMARY').residual.file")
VAR_TGZ=$(node -p "require('$SUMMARY').platform[0].file")
VARIANT=$(node -p "require('$SUMMARY').platform[0].variant")
VPKG="@residual/$PLATFORM-$VARIANT"
say "published residual@$VERSION: $(basename "$MAIN_TGZ") $(thousands "$(stat -c %s "$MAIN_TGZ")") bytes packed ($(thousands "$(node -p "require('$SUMMARY').residual.unpackedSize")") unpacked)"
say "published $VPKG@$VERSION: $(basename "$VAR_TGZ") $(thousands "$(stat -c %s "$VAR_TGZ")") bytes packed; binary $(thousands "$(node -p "require('$SUMMARY').platform[0].strippedBytes")") bytes stripped ($(thousands "$(node -p "require('$SUMMARY').platform[0].builtBytes")") as built)"

step "what the registry serves"
# residual's tarball: what users need, nothing else (the checks pack-test.sh made).
tar tzf "$MAIN_TGZ" | sed 's,^package/,,' | sort > "$WORK/files.txt"
for f in package.json dist/index.js dist/index.d.ts dist/tfjs/index.js dist/tfjs/index.d.ts dist/addon/load.js dist/addon/fetch.js dist/cli/doctor.js bin/residual.js scripts/install/install.mjs scripts/install/libtorch.mjs scripts/install/build.mjs scripts/install/libtorch-manifest.json native/addon.cpp CMakeLists.txt; do
  grep -qx "$f" "$WORK/files.txt" || fail "the tarball lacks $f"
done
if grep -E '^(build/|prebuilds/|\.libtorch|test/|lib/|node_modules/)|\.node$|\.map$' "$WORK/files.txt"; then fail "the tarball ships files users do not need (above)"; fi
[ "$(stat -c %s "$MAIN_TGZ")" -lt 1000000 ] || fail "residual's tarball is larger than 1 MB"
# Its manifest: the platform package pinned to this exact version, and nothing that is not published.
# (asked from the work folder: the checkout's .npmrc holds a devDependency's setting npm warns about)
npmv() { (cd "$WORK" && npm view --registry "$REGISTRY" --json "$@"); }
OD=$(npmv "residual@$VERSION" optionalDependencies | node -e "console.log(JSON.stringify(JSON.parse(require('fs').readFileSync(0, 'utf8'))))")
[ "$OD" = "{\"$VPKG\":\"$VERSION\"}" ] || fail "residual@$VERSION lists optionalDependencies $OD, expected exactly {\"$VPKG\":\"$VERSION\"}"
for v in cpu cu130; do
  if [ "@residual/$PLATFORM-$v" != "$VPKG" ] && V=$(npmv "@residual/$PLATFORM-$v@$VERSION" version 2> /dev/null) && [ -n "$V" ]; then fail "@residual/$PLATFORM-$v is on the registry but not listed"; fi
done
grep -q "not built:" "$WORK/release.log" && grep "not built:" "$WORK/release.log" | sed 's/^\[release\] /  /'
# The platform package: its files, fields and the floor it declares, against readelf's reading.
mkdir -p "$WORK/vpkg" && tar xzf "$VAR_TGZ" -C "$WORK/vpkg"
BIN=$(ls "$WORK"/vpkg/package/*.node)
HAS=$(cd "$WORK/vpkg/package" && ls | LC_ALL=C sort | tr '\n' ' ')
WANT=$(printf '%s\n' "$(basename "$BIN")" README.md libjpeg.so.62 libpng16.so.16 package.json | LC_ALL=C sort | tr '\n' ' ')
[ "$HAS" = "$WANT" ] || fail "the platform package holds $HAS, expected $WANT"
FIELDS=$(npmv "$VPKG@$VERSION" os cpu libc residual | node -e "const j = JSON.parse(require('fs').readFileSync(0, 'utf8')); console.log([j.os, j.cpu, j.libc, j.residual.libtorch, j.residual.variant, j.residual.napiVersion, j.residual.glibc, j.residual.glibcxx].join(' '))")
read -r F_OS F_CPU F_LIBC F_LT F_VAR F_NAPI F_GLIBC F_GLIBCXX <<< "$FIELDS"
[ "$F_OS $F_CPU $F_LIBC" = "linux x64 glibc" ] || fail "$VPKG declares os=$F_OS cpu=$F_CPU libc=$F_LIBC"
[ "$F_VAR" = "$VARIANT" ] && [ "$F_NAPI" = 8 ] || fail "$VPKG declares variant $F_VAR, napiVersion $F_NAPI"
RE_GLIBC=$(for f in "$WORK"/vpkg/package/*.so* "$BIN"; do readelf -V --wide "$f"; done | grep -o 'Name: GLIBC_[0-9.]*' | sed 's/.*GLIBC_//' | sort -V | tail -1)
RE_GLIBCXX=$(for f in "$WORK"/vpkg/package/*.so* "$BIN"; do readelf -V --wide "$f"; done | grep -o 'Name: GLIBCXX_[0-9.]*' | sed 's/.*GLIBCXX_//' | sort -V | tail -1)
[ "$F_GLIBC" = "$RE_GLIBC" ] && [ "$F_GLIBCXX" = "$RE_GLIBCXX" ] || fail "$VPKG declares glibc $F_GLIBC, GLIBCXX $F_GLIBCXX; readelf says GLIBC_$RE_GLIBC, GLIBCXX_$RE_GLIBCXX"
if readelf -S --wide "$BIN" | grep -q '\.symtab'; then fail "$(basename "$BIN") is not stripped"; fi
readelf -d "$BIN" | grep -q 'RUNPATH.*\[\$ORIGIN\]' || fail "$(basename "$BIN") RUNPATH: $(readelf -d "$BIN" | grep -E 'RPATH|RUNPATH')"
say "platform package: os $F_OS, cpu $F_CPU, libc $F_LIBC, libtorch $F_LT ($F_VAR), needs glibc $F_GLIBC and GLIBCXX_$F_GLIBCXX (readelf agrees), stripped, RUNPATH \$ORIGIN"
# A published version cannot be released again: refused before anything is built.
set +e
NPM_CONFIG_USERCONFIG="$PUBLISH_RC" npm run --silent release -- --registry "$REGISTRY" --out "$WORK/release-again" > "$WORK/release-again.log" 2>&1
RC=$?
set -e
[ "$RC" -ne 0 ] && grep -q "residual@$VERSION is already on $REGISTRY" "$WORK/release-again.log" || { cat "$WORK/release-again.log"; fail "a second release of $VERSION was not refused"; }
ok "published packages checked; a second release of $VERSION is refused: $(grep -o 'already on.*' "$WORK/release-again.log")"

# ---- the user's side -----------------------------------------------------------------------------
step "a user's machine: no compiler, no python, pip isolated, libtorch from a mirror on 127.0.0.1"
t=$(now)
node scripts/install/mirror.mjs "$WORK/mirror" --variant "$VARIANT" 2>&1 | tail -1
node scripts/install/serve-mirror.mjs "$WORK/mirror" --port-file "$WORK/mirror.url" > "$WORK/mirror.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/mirror.url" ] && break; sleep 0.1; done
MIRROR=$(cat "$WORK/mirror.url")
UBIN="$WORK/user-bin"
mkdir -p "$UBIN"
# node, npm, npx, sh and the base tools every Linux system has (coreutils, sed, grep: pnpm's bin shims
# call dirname, sed and uname); no compiler, make, cmake or Python.
for c in node npm npx sh sed grep basename cat chmod cp cut date dirname env head id ln ls mkdir mktemp mv readlink realpath rm rmdir sleep sort tail tee touch tr uname wc; do
  p=$(command -v "$c") || fail "no $c on this machine"
  ln -sf "$p" "$UBIN/$c"
done
# as_user HOME DIR [VAR=value ...] COMMAND ...: runs in DIR as that user; nothing else inherited.
as_user() {
  local home=$1 dir=$2; shift 2
  mkdir -p "$home"
  (cd "$dir" && env -i HOME="$home" PATH="$UBIN" LANG=C.UTF-8 PIP_CONFIG_FILE=/dev/null RESIDUAL_LIBTORCH_MIRROR="$MIRROR" "$@")
}
missing=$(as_user "$WORK/probe-home" "$WORK" sh -c 'for c in cc c++ gcc g++ clang++ cmake make python3 python pip pip3; do command -v $c >/dev/null && echo $c; done; true')
[ -z "$missing" ] || fail "the user's PATH has $missing"
say "user environment: PATH=$UBIN (node, npm, npx, sh, coreutils, sed, grep; no cc, c++, gcc, g++, cmake, make, python3, pip), env -i, fresh HOME, PIP_CONFIG_FILE=/dev/null, registry $REGISTRY in the project's .npmrc, RESIDUAL_LIBTORCH_MIRROR=$MIRROR (laid out in $(since "$t"))"

# The user's program: a few SGD steps of ResNet-20 on a fixed random batch; the loss must fall.
new_app() {
  mkdir -p "$1"
  printf '{ "name": "%s", "version": "1.0.0", "private": true, "type": "module" }\n' "$(basename "$1")" > "$1/package.json"
  printf 'registry=%s\n' "$REGISTRY" > "$1/.npmrc"
  cat > "$1/train.mjs" <<'EOF'
import * as R from 'residual';

R.manualSeed(0);
const x = R.randn([16, 3, 32, 32]);
const y = R.randint(0, 10, [16], { dtype: 'int64' });
const model = R.cifarResnet(20);
model.train();
const opt = new R.optim.SGD(model.parameters(), { lr: 0.05, momentum: 0.9 });
const losses = [];
const t0 = Date.now();
for (let i = 0; i < 8; i++) {
  losses.push(R.scope(() => {
    opt.zeroGrad();
    const l = R.crossEntropy(model.call(x), y);
    l.backward();
    opt.step();
    return l.item();
  }));
}
console.log(JSON.stringify({ model: 'cifarResnet(20)', optimizer: 'optim.SGD', steps: losses.length, losses: losses.map((l) => +l.toFixed(4)), ms: Date.now() - t0 }));
if (!losses.every(Number.isFinite)) throw new Error('a loss is not finite');
if (!(losses.at(-1) < losses[0] * 0.9)) throw new Error(`training did not reduce the loss: ${losses.join(', ')}`);
EOF
}

# run_app HOME DIR [VAR=value ...]: trains, runs `npx residual doctor`, keeps doctor's facts in DIR/doctor.json.
run_app() {
  local home=$1 dir=$2; shift 2
  local t1
  t1=$(now)
  as_user "$home" "$dir" "$@" node train.mjs || fail "training in $dir"
  as_user "$home" "$dir" "$@" npx --no-install residual doctor > "$dir/doctor.txt" 2>&1 || { cat "$dir/doctor.txt"; fail "npx residual doctor in $dir"; }
  as_user "$home" "$dir" "$@" npx --no-install residual doctor --json > "$dir/doctor.json" || fail "residual doctor --json in $dir"
  say "$(basename "$dir"): import, 8 training steps of ResNet-20 and npx residual doctor: $(since "$t1") ($(grep -c . "$dir/doctor.txt") lines from doctor, exit 0)"
}
fact() { node -e "const f = JSON.parse(require('fs').readFileSync('$1/doctor.json', 'utf8')).facts; console.log($2)"; }
no_toolchain() { # DIR: the source-build toolchain is not installed for a prebuilt user
  if find "$1/node_modules" -maxdepth 3 -type d \( -name 'cmake-js*' -o -name 'node-addon-api*' \) | grep -q .; then fail "$1: cmake-js or node-addon-api was installed"; fi
}
sizes() { # LABEL DIR HOME PACKAGE-MANAGER-CACHE PACKAGES
  say "$1: node_modules $(mb "$(bytes_of "$2/node_modules")") ($5 packages); package manager's cache $(mb "$(bytes_of "$4")") ($4); libtorch cache $(mb "$(bytes_of "$3/.cache/residual/libtorch")") ($3/.cache/residual/libtorch)"
}

step "1. npm: npm install residual (cold: empty npm cache, empty libtorch cache), train, doctor"
U1="$WORK/user-npm"; A1="$WORK/app-npm"; new_app "$A1"
t=$(now)
as_user "$U1" "$A1" npm install --no-audit --no-fund --foreground-scripts residual > "$WORK/install-1.log" 2>&1 || { cat "$WORK/install-1.log"; fail "npm install residual"; }
say "npm install residual, cold: $(since "$t") (npm cache and libtorch cache empty; libtorch $(mb "$(stat -c %s "$WORK"/mirror/whl/*/torch-*.whl)") from the mirror)"
grep '\[residual\]' "$WORK/install-1.log" | grep -v '%' | sed 's/^/  /'
grep -q 'sha256 verified' "$WORK/install-1.log" || fail "1: libtorch was not fetched and verified"
grep -q 'unpacked what runs' "$WORK/install-1.log" || fail "1: libtorch was not unpacked"
grep -q "using the optional package $VPKG binary .*: no compiler needed" "$WORK/install-1.log" || fail "1: the install did not use the prebuilt binary of $VPKG"
CACHE1="$U1/.cache/residual/libtorch"
CACHED=$(ls -d "$CACHE1"/*/site/torch)
[ -f "$(dirname "$(dirname "$CACHED")")/VERIFIED" ] || fail "1: the cache is not marked VERIFIED"
[ ! -e "$CACHED/include" ] && [ ! -e "$(dirname "$(dirname "$CACHED")")/dev" ] || fail "1: a prebuilt user's cache holds headers"
[ ! -e "$A1/node_modules/residual/build/Release" ] || fail "1: something was built in node_modules/residual/build/Release"
no_toolchain "$A1"
node -e "
  const l = require('$A1/package-lock.json').packages;
  const p = l['node_modules/$VPKG'];
  if (!p || p.version !== '$VERSION' || !p.optional || !String(p.resolved).startsWith('$REGISTRY')) throw new Error('lockfile entry of $VPKG: ' + JSON.stringify(p));
  const others = Object.keys(l).filter((k) => k.includes('@residual/') && k !== 'node_modules/$VPKG');
  if (others.length) throw new Error('the lockfile names ' + others.join(', '));" || fail "1: package-lock.json"
sizes "npm install, cold" "$A1" "$U1" "$U1/.npm" "$(node -p "Object.keys(require('$A1/package-lock.json').packages).length - 1")"
run_app "$U1" "$A1"
sed 's/^/  /' "$A1/doctor.txt"
[ "$(fact "$A1" f.addon.how)" = "optional package $VPKG" ] || fail "1: the addon came from $(fact "$A1" f.addon.how)"
[ "$(fact "$A1" f.libtorchLoadedFrom)" = "$CACHED/lib" ] || fail "1: libtorch was loaded from $(fact "$A1" f.libtorchLoadedFrom), not $CACHED/lib"
ok "1: prebuilt binary from $VPKG, libtorch fetched into and preloaded from $CACHED"

step "1b. npm ci from that lockfile (warm: npm cache and libtorch cache filled)"
rm -rf "$A1/node_modules"
t=$(now)
as_user "$U1" "$A1" npm ci --no-audit --no-fund --foreground-scripts > "$WORK/install-1b.log" 2>&1 || { cat "$WORK/install-1b.log"; fail "npm ci"; }
say "npm ci, warm: $(since "$t")"
grep '\[residual\]' "$WORK/install-1b.log" | sed 's/^/  /'
grep -q 'libtorch .* from cache' "$WORK/install-1b.log" || fail "1b: libtorch did not come from the cache"
if grep -q 'fetching' "$WORK/install-1b.log"; then fail "1b: libtorch was fetched again"; fi
grep -q 'no compiler needed' "$WORK/install-1b.log" || fail "1b: the install did not use the prebuilt binary"
# Without the install's record, run time finds the same libtorch in the cache by itself.
rm "$A1/node_modules/residual/build/libtorch.json"
run_app "$U1" "$A1"
[ "$(fact "$A1" f.libtorch.source)" = cache ] || fail "1b: libtorch came from $(fact "$A1" f.libtorch.source), not the cache"
[ "$(fact "$A1" f.libtorchLoadedFrom)" = "$CACHED/lib" ] || fail "1b: libtorch was loaded from $(fact "$A1" f.libtorchLoadedFrom)"
ok "1b: npm ci from the lockfile works; the cache is reused (found at run time from the cache alone)"

step "2. pnpm 10 at its defaults (build scripts not approved), another user: pnpm add residual"
U2="$WORK/user-pnpm"; A2="$WORK/app-pnpm"; new_app "$A2"
t=$(now)
PNPM_VERSION=$(as_user "$U2" "$A2" npx --yes "$PNPM" --version 2> "$WORK/pnpm-version.log" | tail -1) || { cat "$WORK/pnpm-version.log"; fail "npx $PNPM"; }
[[ "$PNPM_VERSION" =~ ^10\.[0-9]+\.[0-9]+$ ]] || { cat "$WORK/pnpm-version.log"; fail "npx $PNPM --version printed '$PNPM_VERSION'"; }
say "npx $PNPM: pnpm $PNPM_VERSION fetched through the registry in $(since "$t")"
# That exact version from npx's cache from now on (npx --no-install does not match a range such as pnpm@10).
pnpm_() { local home=$1 dir=$2; shift 2; as_user "$home" "$dir" npx --yes "pnpm@$PNPM_VERSION" "$@"; }
t=$(now)
pnpm_ "$U2" "$A2" add residual > "$WORK/install-2.log" 2>&1 || { cat "$WORK/install-2.log"; fail "pnpm add residual"; }
say "pnpm add residual, cold: $(since "$t") (pnpm store empty; the registry already holds the dependencies from step 1; install scripts not run)"
grep -i -A3 'ignored build scripts' "$WORK/install-2.log" | sed 's/^/  /' || true
grep -qi 'ignored build scripts.*residual' "$WORK/install-2.log" || grep -A3 -i 'ignored build scripts' "$WORK/install-2.log" | grep -q residual || fail "2: pnpm did not say it ignored residual's build script"
set +e
as_user "$U2" "$A2" node -e "import('residual').then(() => console.log('imported'))" > "$WORK/import-2.log" 2>&1
RC=$?
set -e
if [ "$RC" -eq 0 ]; then
  say "pnpm: import works without setup"
else
  sed 's/^/  /' "$WORK/import-2.log" | head -6
  grep -q 'npx residual setup' "$WORK/import-2.log" || fail "2: the import error does not name npx residual setup"
  say "pnpm: import before setup fails, naming npx residual setup (as it should: no libtorch for this user yet)"
  t=$(now)
  as_user "$U2" "$A2" npx --no-install residual setup > "$WORK/setup-2.log" 2>&1 || { cat "$WORK/setup-2.log"; fail "2: npx residual setup"; }
  grep '\[residual\]' "$WORK/setup-2.log" | grep -v '%' | sed 's/^/  /'
  grep -q 'no compiler needed' "$WORK/setup-2.log" || fail "2: setup did not use the prebuilt binary"
  say "pnpm: npx residual setup (libtorch fetched from the mirror, prebuilt binary picked): $(since "$t")"
fi
no_toolchain "$A2"
grep -q "'@residual/$PLATFORM-$VARIANT'\|@residual/$PLATFORM-$VARIANT@$VERSION" "$A2/pnpm-lock.yaml" || fail "2: pnpm-lock.yaml does not name $VPKG@$VERSION"
if grep "@residual/" "$A2/pnpm-lock.yaml" | grep -v "$PLATFORM-$VARIANT" | grep -q .; then fail "2: pnpm-lock.yaml names another @residual package"; fi
sizes "pnpm add" "$A2" "$U2" "$U2/.local/share/pnpm" "$(ls "$A2/node_modules/.pnpm" | grep -c '@')"
run_app "$U2" "$A2"
[ "$(fact "$A2" f.addon.how)" = "optional package $VPKG" ] || fail "2: the addon came from $(fact "$A2" f.addon.how)"
rm -rf "$A2/node_modules"
t=$(now)
pnpm_ "$U2" "$A2" install --frozen-lockfile > "$WORK/install-2b.log" 2>&1 || { cat "$WORK/install-2b.log"; fail "pnpm install --frozen-lockfile"; }
say "pnpm install --frozen-lockfile, warm: $(since "$t")"
as_user "$U2" "$A2" node train.mjs > /dev/null || fail "2: training after pnpm install --frozen-lockfile"
ok "2: pnpm 10 without build scripts: the import names npx residual setup, setup makes it work, the lockfile reinstalls"

step "3. LIBTORCH named at install, remembered at run time; residual/tfjs"
read -r LT LT_VARIANT < <(node --input-type=module -e "
  const m = await import('./dist/addon/libtorch.js');
  const r = m.findLibtorch({ quiet: true });
  if (!r) { console.error('no libtorch resolved for this checkout'); process.exit(1); }
  console.log(r.dir + ' ' + r.variantTag);") || fail "no libtorch for this checkout"
A3="$WORK/app-libtorch"; new_app "$A3"
# The mirror is down for this install: LIBTORCH must be enough.
as_user "$U1" "$A3" LIBTORCH="$LT" RESIDUAL_LIBTORCH_MIRROR=http://127.0.0.1:2 npm install --no-audit --no-fund --foreground-scripts residual > "$WORK/install-3.log" 2>&1 || { cat "$WORK/install-3.log"; fail "3: npm install with LIBTORCH"; }
grep -q "libtorch .* from LIBTORCH" "$WORK/install-3.log" || fail "3: LIBTORCH was not used"
grep -q 'no compiler needed' "$WORK/install-3.log" || fail "3: the install did not use the prebuilt binary"
run_app "$U1" "$A3"
[ "$(fact "$A3" f.libtorch.source)" = install ] || fail "3: run time found libtorch through $(fact "$A3" f.libtorch.source), not the install's record"
[ "$(fact "$A3" f.libtorchLoadedFrom)" = "$LT/lib" ] || fail "3: libtorch was loaded from $(fact "$A3" f.libtorchLoadedFrom), not $LT/lib"
ok "3: LIBTORCH=$LT at install (mirror down), not set at run time: found through the install's record (build/libtorch.json), loaded from $(fact "$A3" f.libtorchLoadedFrom)"
TFJS_CORE=$(node -p 'require("./package.json").devDependencies["@tensorflow/tfjs-core"]')
as_user "$U1" "$A3" npm install --no-audit --no-fund "@tensorflow/tfjs-core@$TFJS_CORE" > "$WORK/install-3-tfjs.log" 2>&1 || { cat "$WORK/install-3-tfjs.log"; fail "3: npm install @tensorflow/tfjs-core"; }
cat > "$A3/tfjs.mjs" <<'EOF'
import * as tf from '@tensorflow/tfjs-core';
import 'residual/tfjs';
await tf.ready();
if (tf.getBackend() !== 'residual') throw new Error(`backend is ${tf.getBackend()}, not residual`);
const y = tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[1], [1]]));
const v = Array.from(await y.data());
if (v.join() !== '3,7') throw new Error(`matMul gave ${v}`);
console.log('tfjs backend residual: matMul ok');
EOF
as_user "$U1" "$A3" node tfjs.mjs || fail "3: residual/tfjs"
ok "3: residual/tfjs registers the tfjs backend and computes"

step "4. no libtorch and the mirror down: a clear failure, no partial cache"
A4="$WORK/app-down"; new_app "$A4"; H4="$WORK/home-down"
set +e
as_user "$U1" "$A4" RESIDUAL_HOME="$H4" RESIDUAL_LIBTORCH_MIRROR=http://127.0.0.1:2 RESIDUAL_FETCH_RETRIES=0 npm install --no-audit --no-fund --foreground-scripts residual > "$WORK/install-4.log" 2>&1
RC=$?
set -e
sed -n '/\[residual\]/,$p' "$WORK/install-4.log" | head -20
[ "$RC" -ne 0 ] || fail "4: the install succeeded without libtorch"
for word in LIBTORCH= LIBTORCH_USE_PYTORCH=1 RESIDUAL_VARIANT= RESIDUAL_HOME= RESIDUAL_LIBTORCH_MIRROR= 'npx residual setup' 'cannot reach http://127.0.0.1:2/whl/cpu/.*ECONNREFUSED'; do
  grep -q -- "$word" "$WORK/install-4.log" || fail "4: the failure message does not mention $word"
done
if [ -d "$H4/libtorch" ] && [ -n "$(ls -A "$H4/libtorch" | grep -v '\.lock$')" ]; then ls -la "$H4/libtorch"; fail "4: something was left in the cache"; fi
ok "4: exit status $RC, advice printed, cache empty"

step "5. npm --ignore-scripts: the import names npx residual setup; doctor runs; setup fixes it"
A5="$WORK/app-noscripts"; new_app "$A5"; H5="$WORK/home-noscripts"
as_user "$U1" "$A5" RESIDUAL_HOME="$H5" npm install --ignore-scripts --no-audit --no-fund residual > "$WORK/install-5.log" 2>&1 || { cat "$WORK/install-5.log"; fail "5: npm install --ignore-scripts"; }
set +e
as_user "$U1" "$A5" RESIDUAL_HOME="$H5" node -e "import('residual').then(() => console.log('imported'))" > "$WORK/import-5.log" 2>&1
RC=$?
set -e
head -8 "$WORK/import-5.log"
[ "$RC" -ne 0 ] || fail "5: import worked before setup (no libtorch should be there)"
grep -q 'npx residual setup' "$WORK/import-5.log" || fail "5: the import error does not name npx residual setup"
set +e
as_user "$U1" "$A5" RESIDUAL_HOME="$H5" npx --no-install residual doctor > "$WORK/doctor-5.log" 2>&1
RC=$?
set -e
cat "$WORK/doctor-5.log"
[ "$RC" -eq 1 ] || fail "5: doctor exit status $RC (expected 1: problems found)"
grep -q 'no libtorch found' "$WORK/doctor-5.log" || fail "5: doctor does not say libtorch is missing"
grep -q 'fix: npx residual setup' "$WORK/doctor-5.log" || fail "5: doctor does not name npx residual setup"
t=$(now)
as_user "$U1" "$A5" RESIDUAL_HOME="$H5" npx --no-install residual setup > "$WORK/setup-5.log" 2>&1 || { cat "$WORK/setup-5.log"; fail "5: npx residual setup"; }
grep -q 'sha256 verified' "$WORK/setup-5.log" || fail "5: setup did not fetch and verify libtorch"
grep -q 'no compiler needed' "$WORK/setup-5.log" || fail "5: setup did not use the prebuilt binary"
say "npm --ignore-scripts, then npx residual setup (libtorch fetched from the mirror): $(since "$t")"
run_app "$U1" "$A5" RESIDUAL_HOME="$H5"
ok "5: without install scripts, the import names npx residual setup, doctor runs, and setup makes it work"

printf '\n'
say "REGISTRY TEST PASSED in $(since "$T0"): residual@$VERSION and $VPKG@$VERSION published to $REGISTRY and installed with npm and pnpm by users without a compiler or Python"
