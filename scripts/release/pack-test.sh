#!/usr/bin/env bash
# Packs residual as users get it and uses it from fresh temporary projects:
#   A. prebuilt binary from the optional variant package, libtorch named by LIBTORCH at install
#      (the local resolution) and not set at run time; no compiler may run (cmake and c++ on PATH
#      are traps that fail)
#   B. nothing set and an empty RESIDUAL_HOME: the install fetches the pinned libtorch into the cache
#      with Node (no pip), from a local mirror on 127.0.0.1 (RESIDUAL_LIBTORCH_MIRROR, laid out by
#      npm run libtorch:mirror from this machine's wheel); the prebuilt binary then runs with libtorch
#      preloaded from the cache only
#   C. a second project sharing that cache: no fetch, no compile
#   D. a fresh project, no libtorch anywhere and the fetch cannot succeed (the mirror is down): the
#      install fails, says what to set and what to run next, and leaves no partial cache behind
#   E. install scripts off (npm --ignore-scripts; pnpm's default): the import fails naming
#      `npx residual setup`, `residual doctor` runs and says what is missing, setup makes it work
# In A-C and E: import residual, train a few steps of a small ResNet, run `residual doctor`.
#
#   bash scripts/release/pack-test.sh        (KEEP=1 keeps the temporary folder; PACK_TEST_DIR=... chooses it)
# Needs: build/Release/residual.node (node scripts/install/build.mjs), the npm registry for residual's
# dependencies, and the pinned wheel of the current build's variant on this machine (for the mirror).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${PACK_TEST_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/residual-pack-test.XXXXXX")}
mkdir -p "$WORK"
cleanup() { if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
step() { printf '\n=== %s\n' "$*"; }
fail() { echo "PACK TEST FAILED: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

cd "$ROOT"
[ -f build/Release/residual.node ] || fail "build the addon first: node scripts/install/build.mjs"

step "compile the TypeScript"
node scripts/install/build.mjs --ts-only

# The libtorch this checkout uses (LIBTORCH, LIBTORCH_USE_PYTORCH, .libtorch/ or the cache).
read -r LT VARIANT < <(node --input-type=module -e "
  const m = await import('./dist/addon/libtorch.js');
  const r = m.findLibtorch({ quiet: true });
  if (!r) { console.error('no libtorch resolved for this checkout'); process.exit(1); }
  console.log(r.dir + ' ' + r.variantTag);") || fail "no libtorch for this checkout"
PLATFORM=$(node -p 'process.platform + "-" + process.arch')
VERSION=$(node -p 'require("./package.json").version')
echo "libtorch $LT ($VARIANT), $PLATFORM, residual $VERSION"

step "prebuilt binary and optional package from the current build (scripts/release/prebuild.mjs)"
node scripts/release/prebuild.mjs --out "$WORK/stage"
VPKG="$WORK/stage/npm/@residual/$PLATFORM-$VARIANT"
[ -f "$VPKG/package.json" ] || fail "prebuild.mjs made no $VPKG"

step "npm pack"
# The published package.json lists the variant packages as optionalDependencies; the repository's
# does not until they are on the registry (npm ci fails on a lock without them). Pack as released:
# add them to the packed manifest. npm skips an optional dependency it cannot find (the other variant).
mkdir -p "$WORK/raw" "$WORK/main"
npm pack --silent --pack-destination "$WORK/raw" >/dev/null
tar xzf "$WORK/raw/residual-$VERSION.tgz" -C "$WORK/main"
node -e "
  const fs = require('fs'), f = process.argv[1], p = JSON.parse(fs.readFileSync(f, 'utf8'));
  p.optionalDependencies = Object.fromEntries(['cpu', 'cu130'].map((v) => ['@residual/$PLATFORM-' + v, p.version]));
  fs.writeFileSync(f, JSON.stringify(p, null, 2) + '\n');" "$WORK/main/package/package.json"
(cd "$WORK/main/package" && npm pack --silent --pack-destination "$WORK" >/dev/null)
(cd "$VPKG" && npm pack --silent --pack-destination "$WORK" >/dev/null)
MAIN_TGZ="$WORK/residual-$VERSION.tgz"
VAR_TGZ="$WORK/residual-$PLATFORM-$VARIANT-$VERSION.tgz"
[ -f "$MAIN_TGZ" ] && [ -f "$VAR_TGZ" ] || fail "npm pack did not produce $MAIN_TGZ and $VAR_TGZ"
tar tzf "$MAIN_TGZ" | sed 's,^package/,,' | sort > "$WORK/files.txt"
for f in package.json dist/index.js dist/index.d.ts dist/tfjs/index.js dist/tfjs/index.d.ts dist/addon/load.js dist/addon/fetch.js dist/cli/doctor.js scripts/install/install.mjs scripts/install/libtorch.mjs scripts/install/build.mjs scripts/install/libtorch-manifest.json native/addon.cpp CMakeLists.txt; do
  grep -qx "$f" "$WORK/files.txt" || fail "the tarball lacks $f"
done
if grep -E '^(build/|prebuilds/|\.libtorch|test/|lib/|node_modules/)|\.node$|\.map$' "$WORK/files.txt"; then fail "the tarball ships files users do not need (above)"; fi
SIZE=$(stat -c %s "$MAIN_TGZ")
UNPACKED=$(tar xzf "$MAIN_TGZ" -O | wc -c)
echo "residual-$VERSION.tgz: $SIZE bytes packed, $UNPACKED bytes unpacked, $(wc -l < "$WORK/files.txt") files"
echo "$(basename "$VAR_TGZ"): $(stat -c %s "$VAR_TGZ") bytes"
[ "$SIZE" -lt 1000000 ] || fail "the tarball is larger than 1 MB"
ok "tarball contents"

# Compiler traps: if anything tries to build from source in A-C, it fails loudly.
mkdir -p "$WORK/trap"
for t in cmake c++ g++ cc gcc make; do
  printf '#!/bin/sh\necho "pack test: %s must not run (no compile expected)" >&2\nexit 99\n' "$t" > "$WORK/trap/$t"
  chmod +x "$WORK/trap/$t"
done
TRAP_PATH="$WORK/trap:$PATH"

# The user's program: a few SGD steps of a small ResNet on a fixed random batch.
write_app() {
  mkdir -p "$1"
  cat > "$1/package.json" <<'EOF'
{ "name": "pack-test-app", "version": "1.0.0", "private": true, "type": "module" }
EOF
  cat > "$1/train.mjs" <<'EOF'
import * as R from 'residual';

R.manualSeed(0);
const x = R.randn([16, 3, 32, 32]);
const y = R.randint(0, 10, [16], { dtype: 'int64' });

// cifarResnet(20) and optim.SGD when this version has them; otherwise a one-block residual net and
// plain SGD written with autograd (so the check works while those land).
let model, forward, params;
if (typeof R.cifarResnet === 'function') {
  model = R.cifarResnet(20);
  model.train();
  params = model.parameters();
  forward = (inp) => model.call(inp);
} else {
  const p = (shape, s) => R.randn(shape).mul(s).requiresGrad_();
  const w0 = p([16, 3, 3, 3], 0.2), w1 = p([16, 16, 3, 3], 0.1), w2 = p([16, 16, 3, 3], 0.1), fc = p([10, 16], 0.3), b = R.zeros([10]).requiresGrad_();
  params = [w0, w1, w2, fc, b];
  forward = (inp) => {
    const h = R.relu(R.conv2d(inp, w0, null, { padding: 1 }));
    const r = R.relu(R.conv2d(h, w1, null, { padding: 1 }));
    const o = R.relu(R.conv2d(r, w2, null, { padding: 1 }).add(h)); // the residual connection
    return R.linear(R.adaptiveAvgPool2d(o, [1, 1]).flatten(1), fc, b);
  };
}
let step, zeroGrad, how;
if (R.optim?.SGD) {
  const opt = new R.optim.SGD(params, { lr: 0.05, momentum: 0.9 });
  step = () => opt.step();
  zeroGrad = () => opt.zeroGrad();
  how = 'optim.SGD';
} else {
  step = () => R.noGrad(() => { for (const t of params) { const g = t.grad; if (g) { t.sub_(g.mul(0.05)); g.dispose(); } } });
  zeroGrad = () => { for (const t of params) t.grad = null; };
  how = 'manual SGD';
}
const losses = [];
const t0 = Date.now();
for (let i = 0; i < 8; i++) {
  const loss = R.scope(() => {
    zeroGrad();
    const l = R.crossEntropy(forward(x), y);
    l.backward();
    step();
    return l.item();
  });
  losses.push(loss);
}
const model_ = typeof R.cifarResnet === 'function' ? 'cifarResnet(20)' : 'one-block residual net (cifarResnet not in this build)';
console.log(JSON.stringify({ model: model_, optimizer: how, losses: losses.map((l) => +l.toFixed(4)), ms: Date.now() - t0 }));
if (!losses.every(Number.isFinite)) throw new Error('a loss is not finite');
if (!(losses.at(-1) < losses[0] * 0.9)) throw new Error(`training did not reduce the loss: ${losses.join(', ')}`);
EOF
}

# run_app DIR ENV...: trains and runs the doctor there; prints the doctor's JSON into DIR/doctor.json.
run_app() {
  local dir=$1; shift
  (cd "$dir" && env "$@" node train.mjs) || fail "training in $dir"
  if [ -x "$dir/node_modules/.bin/residual" ] && [ -f "$dir/node_modules/residual/bin/residual.js" ]; then
    (cd "$dir" && env "$@" npx --no-install residual doctor) || fail "residual doctor in $dir"
  else
    echo "(no residual bin yet: running dist/cli/doctor.js)"
    (cd "$dir" && env "$@" node node_modules/residual/dist/cli/doctor.js) || fail "doctor in $dir"
  fi
  (cd "$dir" && env "$@" node node_modules/residual/dist/cli/doctor.js --json) > "$dir/doctor.json" || fail "doctor --json in $dir"
}

# fact DIR EXPR: a value from DIR/doctor.json
fact() { node -e "const f = JSON.parse(require('fs').readFileSync('$1/doctor.json', 'utf8')).facts; console.log($2)"; }

npm_install() {
  local dir=$1 log=$2; shift 2
  (cd "$dir" && env "$@" npm install --no-audit --no-fund --foreground-scripts "$MAIN_TGZ" "$VAR_TGZ") > "$log" 2>&1 || { cat "$log"; fail "npm install in $dir"; }
  grep '\[residual\]' "$log" || true
}

NOENV=(-u LIBTORCH -u LIBTORCH_USE_PYTORCH -u RESIDUAL_ADDON -u LD_LIBRARY_PATH)

step "A: install with LIBTORCH=$LT, prebuilt optional package, compilers trapped"
A="$WORK/app-a"; write_app "$A"
npm_install "$A" "$WORK/install-a.log" "${NOENV[@]}" PATH="$TRAP_PATH" LIBTORCH="$LT" RESIDUAL_HOME="$WORK/home-a"
grep -q 'no compiler needed' "$WORK/install-a.log" || fail "A: the install did not use the prebuilt binary"
[ ! -e "$A/node_modules/residual/build/Release" ] || fail "A: something was built in node_modules/residual/build/Release"
# LIBTORCH is not set at run time: the libtorch chosen at install is remembered.
run_app "$A" "${NOENV[@]}" PATH="$TRAP_PATH" RESIDUAL_HOME="$WORK/home-a"
[ "$(fact "$A" f.addon.how)" = "optional package @residual/$PLATFORM-$VARIANT" ] || fail "A: the addon came from $(fact "$A" f.addon.how)"
[ "$(fact "$A" f.libtorchLoadedFrom)" = "$LT/lib" ] || fail "A: libtorch was loaded from $(fact "$A" f.libtorchLoadedFrom), not $LT/lib"
ok "A: $(fact "$A" f.addon.how), libtorch from $(fact "$A" f.libtorch.source), loaded from $(fact "$A" f.libtorchLoadedFrom)"
# residual/tfjs: residual alone must not need tfjs (above); with tfjs-core installed beside it, the subpath
# export registers the backend and computes on it.
TFJS_CORE=$(node -p 'require("./package.json").devDependencies["@tensorflow/tfjs-core"]')
(cd "$A" && npm install --no-audit --no-fund "@tensorflow/tfjs-core@$TFJS_CORE") > "$WORK/install-a-tfjs.log" 2>&1 || { cat "$WORK/install-a-tfjs.log"; fail "A: npm install @tensorflow/tfjs-core"; }
cat > "$A/tfjs.mjs" <<'EOF2'
import * as tf from '@tensorflow/tfjs-core';
import 'residual/tfjs';
await tf.ready();
if (tf.getBackend() !== 'residual') throw new Error(`backend is ${tf.getBackend()}, not residual`);
const y = tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[1], [1]]));
const v = Array.from(await y.data());
if (v.join() !== '3,7') throw new Error(`matMul gave ${v}`);
console.log('tfjs backend residual: matMul ok');
EOF2
(cd "$A" && env "${NOENV[@]}" PATH="$TRAP_PATH" RESIDUAL_HOME="$WORK/home-a" node tfjs.mjs) || fail "A: residual/tfjs"
ok "A: residual/tfjs registers the tfjs backend and computes"

step "B: nothing set, empty RESIDUAL_HOME: the install fetches libtorch into the cache (local mirror, pip isolated)"
node scripts/install/mirror.mjs "$WORK/mirror" --variant "$VARIANT"
node scripts/install/serve-mirror.mjs "$WORK/mirror" --port-file "$WORK/mirror.url" > "$WORK/mirror.log" 2>&1 &
MIRROR_PID=$!
trap 'kill $MIRROR_PID 2>/dev/null; cleanup' EXIT
for _ in $(seq 50); do [ -s "$WORK/mirror.url" ] && break; sleep 0.1; done
MIRROR=$(cat "$WORK/mirror.url")
PIPISO=(-u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null)
B="$WORK/app-b"; write_app "$B"; HOME_B="$WORK/home-b"
npm_install "$B" "$WORK/install-b.log" "${NOENV[@]}" "${PIPISO[@]}" PATH="$TRAP_PATH" RESIDUAL_HOME="$HOME_B" RESIDUAL_VARIANT="$VARIANT" RESIDUAL_LIBTORCH_MIRROR="$MIRROR"
grep -q 'sha256 verified' "$WORK/install-b.log" || fail "B: libtorch was not fetched and verified"
grep -q 'unpacked what runs' "$WORK/install-b.log" || fail "B: libtorch was not unpacked"
[ ! -e "$HOME_B/libtorch/$(ls "$HOME_B/libtorch" | grep -v lock | head -1)/site/torch/include" ] || fail "B: a prebuilt user's cache holds headers"
grep -q 'no compiler needed' "$WORK/install-b.log" || fail "B: the install did not use the prebuilt binary"
CACHED=$(ls -d "$HOME_B"/libtorch/*/site/torch)
[ -f "$(dirname "$(dirname "$CACHED")")/VERIFIED" ] || fail "B: the cache is not marked VERIFIED"
run_app "$B" "${NOENV[@]}" PATH="$TRAP_PATH" RESIDUAL_HOME="$HOME_B" RESIDUAL_VARIANT="$VARIANT"
[ "$(fact "$B" f.libtorchLoadedFrom)" = "$CACHED/lib" ] || fail "B: libtorch was loaded from $(fact "$B" f.libtorchLoadedFrom), not $CACHED/lib"
ok "B: libtorch only in the cache ($CACHED), preloaded by the loader"

step "C: a second project shares the cache: no fetch, no compile"
C="$WORK/app-c"; write_app "$C"
npm_install "$C" "$WORK/install-c.log" "${NOENV[@]}" PATH="$TRAP_PATH" RESIDUAL_HOME="$HOME_B" RESIDUAL_VARIANT="$VARIANT"
grep -q 'libtorch from the cache' "$WORK/install-c.log" || fail "C: libtorch did not come from the cache"
if grep -q 'fetching' "$WORK/install-c.log"; then fail "C: libtorch was fetched again"; fi
# Without the install's record, run time finds the same libtorch in the cache by itself.
rm "$C/node_modules/residual/build/libtorch.json"
run_app "$C" "${NOENV[@]}" PATH="$TRAP_PATH" RESIDUAL_HOME="$HOME_B" RESIDUAL_VARIANT="$VARIANT"
[ "$(fact "$C" f.libtorch.source)" = cache ] || fail "C: libtorch came from $(fact "$C" f.libtorch.source), not the cache"
[ "$(fact "$C" f.libtorchLoadedFrom)" = "$CACHED/lib" ] || fail "C: libtorch was loaded from $(fact "$C" f.libtorchLoadedFrom)"
ok "C: cache reused (found at run time from RESIDUAL_HOME alone)"

step "D: a fresh project, no libtorch and the mirror down: a clear failure, no partial cache"
D="$WORK/app-d"; write_app "$D"; HOME_D="$WORK/home-d"
set +e
(cd "$D" && env "${NOENV[@]}" "${PIPISO[@]}" PATH="$TRAP_PATH" RESIDUAL_HOME="$HOME_D" RESIDUAL_VARIANT="$VARIANT" RESIDUAL_LIBTORCH_MIRROR=http://127.0.0.1:9 RESIDUAL_FETCH_RETRIES=0 \
  npm install --no-audit --no-fund --foreground-scripts "$MAIN_TGZ" "$VAR_TGZ") > "$WORK/install-d.log" 2>&1
RC=$?
set -e
sed -n '/\[residual\]/,$p' "$WORK/install-d.log" | head -20
[ "$RC" -ne 0 ] || fail "D: the install succeeded without libtorch"
for word in LIBTORCH= LIBTORCH_USE_PYTORCH=1 RESIDUAL_VARIANT= RESIDUAL_HOME= RESIDUAL_LIBTORCH_MIRROR= 'npx residual setup' 'cannot reach http://127.0.0.1:9'; do
  grep -q "$word" "$WORK/install-d.log" || fail "D: the failure message does not mention $word"
done
if [ -d "$HOME_D/libtorch" ] && [ -n "$(ls -A "$HOME_D/libtorch" | grep -v '\.lock$')" ]; then ls -la "$HOME_D/libtorch"; fail "D: something was left in the cache"; fi
ok "D: exit status $RC, advice printed, cache empty"

step "E: install scripts off (npm --ignore-scripts, as pnpm by default): import names npx residual setup; doctor runs; setup fixes it"
E="$WORK/app-e"; write_app "$E"; HOME_E="$WORK/home-e"
EENV=("${NOENV[@]}" "${PIPISO[@]}" PATH="$TRAP_PATH" RESIDUAL_HOME="$HOME_E" RESIDUAL_VARIANT="$VARIANT" RESIDUAL_LIBTORCH_MIRROR="$MIRROR")
(cd "$E" && env "${EENV[@]}" npm install --ignore-scripts --no-audit --no-fund "$MAIN_TGZ" "$VAR_TGZ") > "$WORK/install-e.log" 2>&1 || { cat "$WORK/install-e.log"; fail "E: npm install --ignore-scripts"; }
set +e
(cd "$E" && env "${EENV[@]}" node -e "import('residual').then(() => console.log('imported'))") > "$WORK/import-e.log" 2>&1
RC=$?
set -e
cat "$WORK/import-e.log" | head -8
[ "$RC" -ne 0 ] || fail "E: import worked before setup (no libtorch should be there)"
grep -q 'npx residual setup' "$WORK/import-e.log" || fail "E: the import error does not name npx residual setup"
set +e
(cd "$E" && env "${EENV[@]}" npx --no-install residual doctor) > "$WORK/doctor-e.log" 2>&1
RC=$?
set -e
cat "$WORK/doctor-e.log"
[ "$RC" -eq 1 ] || fail "E: doctor exit status $RC (expected 1: problems found)"
grep -q 'no libtorch found' "$WORK/doctor-e.log" || fail "E: doctor does not say libtorch is missing"
grep -q 'fix: npx residual setup' "$WORK/doctor-e.log" || fail "E: doctor does not name npx residual setup"
(cd "$E" && env "${EENV[@]}" npx --no-install residual setup) > "$WORK/setup-e.log" 2>&1 || { cat "$WORK/setup-e.log"; fail "E: npx residual setup"; }
grep '\[residual\]' "$WORK/setup-e.log" | grep -v '%' || true
grep -q 'no compiler needed' "$WORK/setup-e.log" || fail "E: setup did not use the prebuilt binary"
run_app "$E" "${EENV[@]}"
ok "E: without install scripts, the import names npx residual setup, doctor runs, and setup makes it work"

printf '\nPACK TEST PASSED (residual-%s.tgz: %s bytes)\n' "$VERSION" "$SIZE"
