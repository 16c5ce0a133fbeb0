#!/usr/bin/env bash
# The addon as a machine without gloo's headers builds it (npm install must not need libgloo-dev):
# the translation units that see c10d's headers (RESIDUAL_C10D_SOURCES in native/dist.cmake) compiled
# with /usr/include/gloo hidden (a private mount namespace) and without RESIDUAL_GLOO/USE_C10D_GLOO,
# linked with the other objects of build/ (same flags otherwise). Then the dist tests run against it: the
# Gloo tests skip with the reason, and initProcessGroup({backend: 'gloo'}) names what to install. Cheap
# (two translation units); skipped where namespaces are not allowed.
#   bash scripts/ci/build-nogloo-check.sh          (after the normal build: build/ must exist)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
B=build
OUT=${OUT:-$ROOT/build-nogloo}
[ -f "$B/CMakeFiles/residual.dir/flags.make" ] || { echo "build-nogloo-check: build the addon first (npm install)"; exit 1; }
if ! unshare -m true 2>/dev/null; then echo "build-nogloo-check: no mount namespaces here; skipping"; exit 0; fi
mkdir -p "$OUT"
DEFS=$(sed -n 's/^CXX_DEFINES = //p' $B/CMakeFiles/residual.dir/flags.make | sed 's/-DUSE_C10D_GLOO//; s/-DRESIDUAL_VARIANT=\\"[a-z]*\\"//')
VARIANT=$(sed -n 's/.*-DRESIDUAL_VARIANT=\\"\([a-z]*\)\\".*/\1/p' $B/CMakeFiles/residual.dir/flags.make)
INCS=$(sed -n 's/^CXX_INCLUDES = //p' $B/CMakeFiles/residual.dir/flags.make)
FLAGS=$(sed -n 's/^CXX_FLAGS = //p' $B/CMakeFiles/residual.dir/flags.make)
# The same list CMake compiles with the c10d definitions (one set() line in native/dist.cmake).
SOURCES=$(sed -n 's/^set(RESIDUAL_C10D_SOURCES \(.*\))$/\1/p' native/dist.cmake)
[ -n "$SOURCES" ] || { echo "build-nogloo-check: no RESIDUAL_C10D_SOURCES line in native/dist.cmake"; exit 1; }
HIDE=""
for d in /usr/include/gloo /usr/local/include/gloo; do [ -d "$d" ] && HIDE="$HIDE mount -t tmpfs none $d &&"; done
LINK=$(sed "s|-o Release/residual.node|-o $OUT/residual.node|" $B/CMakeFiles/residual.dir/link.txt)
echo "$HIDE true" > "$OUT/cc.sh"
for src in $SOURCES; do
  obj="CMakeFiles/residual.dir/$src.o"
  case " $LINK " in *" $obj "*) ;; *) echo "build-nogloo-check: $obj is not in build/'s link line (rebuild build/)"; exit 1 ;; esac
  o="$OUT/$(echo "$src" | tr / _).o"
  echo "c++ $DEFS '-DRESIDUAL_VARIANT=\"$VARIANT\"' -DUSE_DISTRIBUTED=1 $INCS $FLAGS -c $src -o $o" >> "$OUT/cc.sh"
  LINK=$(echo "$LINK" | sed "s|$obj|$o|")
done
echo "build-nogloo-check: compiling $SOURCES without gloo's headers"
unshare -m sh -e "$OUT/cc.sh"
(cd $B && eval "$LINK")
RESIDUAL_ADDON="$OUT/residual.node" node --input-type=module -e "
  const { native } = await import('./dist/addon/binding.js');
  if (native.buildInfo().gloo !== false) throw new Error('buildInfo().gloo is not false');
  const { dist } = await import('./dist/index.js');
  await dist.initProcessGroup({ backend: 'gloo', rank: 0, worldSize: 1, masterPort: 0, timeoutMs: 5000 }).then(
    () => { throw new Error('initProcessGroup(gloo) worked without gloo'); },
    (e) => { if (!/libgloo-dev/.test(e.message)) throw e; console.log('build-nogloo-check: ' + e.message); });"
RESIDUAL_ADDON="$OUT/residual.node" CI= npx vitest run test/e2e/dist.test.ts
echo "build-nogloo-check: ok"
