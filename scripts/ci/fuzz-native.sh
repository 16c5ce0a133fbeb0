#!/usr/bin/env bash
# Fuzzes the image library (native/image/: no torch, built on its own) with libFuzzer under
# AddressSanitizer and UndefinedBehaviorSanitizer: the decoders with the loader's transform
# (native/fuzz/fuzz_decode.cpp) and the tar reader with the WebDataset sample reader
# (native/fuzz/fuzz_tar.cpp). Seeds: test/fixtures/images, tars of them in ustar, GNU and pax formats
# (made here with Python's tarfile), and the committed regression inputs (native/fuzz/regressions/).
# A crash, a sanitizer report or a failed invariant ends it with a non-zero status and the input saved.
#   bash scripts/ci/fuzz-native.sh [SECONDS_PER_TARGET]      (default 30; FUZZ_DIR keeps corpora and builds)
# Needs clang and libFuzzer: apt-get install clang libclang-rt-14-dev (Debian 12).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SECS=${1:-30}
DIR=${FUZZ_DIR:-$ROOT/build-fuzz}
CXX=${FUZZ_CXX:-clang++}
JOBS=${FUZZ_JOBS:-1}  # more than 1: libFuzzer's -fork mode with this many processes
command -v "$CXX" >/dev/null || { echo "fuzz-native: $CXX not found (Debian: apt-get install clang libclang-rt-14-dev)"; exit 1; }
mkdir -p "$DIR"

LIB=(native/image/codec.cpp native/image/resample.cpp native/image/crop.cpp native/image/transform.cpp native/image/tar.cpp)
for t in decode tar; do
  bin="$DIR/fuzz_$t"
  # rebuilt when a source is newer than the binary
  if [ ! -x "$bin" ] || [ -n "$(cd "$ROOT" && find native/image native/fuzz/fuzz_$t.cpp -newer "$bin" -name '*.[ch]*' | head -1)" ]; then
    echo "fuzz-native: building fuzz_$t"
    (cd "$ROOT" && "$CXX" -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
      -Inative "${LIB[@]}" "native/fuzz/fuzz_$t.cpp" -o "$bin" -ljpeg -lpng)
  fi
done

# Seeds (regenerated each run: cheap).
rm -rf "$DIR/seeds" && mkdir -p "$DIR/seeds/decode" "$DIR/seeds/tar"
for f in "$ROOT"/test/fixtures/images/*.png "$ROOT"/test/fixtures/images/*.jpg; do
  b=$(basename "$f")
  # control bytes (see fuzz_decode.cpp): plain decode to 1/3/4 channels; train, eval and resize transforms
  for ctl in '\x01\x77' '\x02\x33' '\x04\xf0' '\x25\x0f' '\x89\x77' '\x48\x11'; do
    { printf "$ctl"; cat "$f"; } > "$DIR/seeds/decode/$b-$(printf "$ctl" | od -An -tx1 | tr -d ' \n')"
  done
done
python3 - "$ROOT/test/fixtures/images" "$DIR/seeds/tar" <<'PY'
import io, os, sys, tarfile
src, out = sys.argv[1], sys.argv[2]
imgs = sorted(f for f in os.listdir(src) if f.endswith(('.jpg', '.png')) and os.path.getsize(os.path.join(src, f)) < 8000)
def member(t, name, data, kind=tarfile.REGTYPE):
    ti = tarfile.TarInfo(name); ti.type = kind; ti.size = len(data) if kind == tarfile.REGTYPE else 0
    t.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
for fmt, tag in ((tarfile.USTAR_FORMAT, 'ustar'), (tarfile.GNU_FORMAT, 'gnu'), (tarfile.PAX_FORMAT, 'pax')):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=fmt) as t:
        member(t, 'dir', b'', tarfile.DIRTYPE)
        for k, f in enumerate(imgs[:3]):
            key = ('d/' * 60 if fmt != tarfile.USTAR_FORMAT and k == 1 else '') + f'{k:06d}'
            member(t, key + '.' + f.rsplit('.', 1)[1], open(os.path.join(src, f), 'rb').read())
            member(t, key + '.cls', str(k * 7).encode())
        member(t, '000009.cls', b'12')  # a label without an image
        member(t, '000010.JPG', open(os.path.join(src, imgs[0]), 'rb').read())  # an image without a label
        member(t, '000011.cls', b' 65536 ')  # a label out of range
    open(os.path.join(out, tag + '.tar'), 'wb').write(buf.getvalue())
PY
cp "$ROOT"/native/fuzz/regressions/decode/* "$DIR/seeds/decode/" 2>/dev/null || true
cp "$ROOT"/native/fuzz/regressions/tar/* "$DIR/seeds/tar/" 2>/dev/null || true

status=0
for t in decode tar; do
  mkdir -p "$DIR/corpus/$t" "$DIR/crashes"
  echo "fuzz-native: fuzz_$t for ${SECS}s"
  par=()
  [ "$JOBS" -gt 1 ] && par=(-fork="$JOBS")
  ( cd "$DIR" && "./fuzz_$t" -max_total_time="$SECS" -timeout=20 -rss_limit_mb=2048 -max_len=131072 "${par[@]}" \
      -print_final_stats=1 -artifact_prefix="$DIR/crashes/$t-" "corpus/$t" "seeds/$t" ) >"$DIR/fuzz_$t.log" 2>&1 || status=1
  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|ERROR|SUMMARY' "$DIR/fuzz_$t.log" | sed "s/^/fuzz_$t: /" || true
  if [ -n "$(ls -A "$DIR/crashes" 2>/dev/null | grep "^$t-" || true)" ]; then status=1; fi
done
if [ $status -ne 0 ]; then
  echo "fuzz-native: FAILED; inputs in $DIR/crashes, logs in $DIR/fuzz_*.log"
  tail -40 "$DIR"/fuzz_*.log
  exit 1
fi
echo "fuzz-native: ok (no crash, sanitizer report or failed invariant)"
