// libFuzzer target: the tar reader (ustar, GNU long names, pax headers, base-256 sizes) as the loader
// and the shard scan use it: scanTar (tarScan) and SampleReader (WebDataset samples: keys, .cls
// labels, member size limits). The input is the tar file itself, written to a memfd so that the
// reader opens it by path exactly as it opens a shard. Built and run by scripts/ci/fuzz-native.sh.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "image/tar.h"

using namespace residual::image;

static void check(bool ok) {
  if (!ok) __builtin_trap();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static int fd = memfd_create("fuzz-tar", 0);
  static std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (fd < 0) abort();
  if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != ssize_t(size)) abort();
  Limits lim;
  lim.maxFileBytes = 4096;  // small, so that the over-the-limit paths are reached by small inputs
  int64_t scanned = -1;
  try {
    TarSummary s = scanTar(path, lim);
    check(s.samples >= 0 && s.samples <= s.members && s.maxLabel >= -1 && s.maxLabel <= kMaxLabel);
    check(s.members * 512 <= int64_t(size));
    scanned = s.samples;
  } catch (const ImageError& e) {
    check(std::string(e.what()).compare(0, path.size(), path) == 0);  // errors name the shard
  }
  try {
    SampleReader reader(path, lim);
    TarSample s;
    int64_t n = 0, withImage = 0;
    while (reader.next(s)) {
      n++;
      check(!s.key.empty());
      if (s.error.empty()) {
        withImage++;
        check(int64_t(s.image.size()) <= lim.maxFileBytes && s.label >= 0 && s.label <= kMaxLabel);
      }
    }
    if (scanned >= 0) check(withImage <= scanned);
  } catch (const ImageError&) {}
  return 0;
}
