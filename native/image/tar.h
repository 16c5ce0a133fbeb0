// Reading files and tar shards (ustar, GNU and pax) safely: only regular files are opened (a FIFO or
// device would block a loader thread, or never end), sizes are bounded, tar header checksums and size
// fields are verified, and a member cut short by truncation is an error. WebDataset samples are the
// members sharing a key (0001.jpg + 0001.cls).
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "image/types.h"

namespace residual::image {

// Opens a regular file for reading (ImageError otherwise); `size` gets its size.
std::FILE* openRegular(const std::string& path, int64_t& size);

// A whole regular file of at most lim.maxFileBytes bytes.
std::vector<uint8_t> readFile(const std::string& path, const Limits& lim);

struct TarMember {
  std::string name;
  int64_t size = 0;
  int64_t offset = 0;  // of the header
};

// Sequential reader of a tar file. next() returns the next regular file (pax and GNU long names
// applied; directories and other entries skipped); data() reads its bytes, or skip() passes them.
// Errors are ImageErrors whose message starts with the path.
class TarReader {
 public:
  TarReader(const std::string& path, const Limits& lim);
  ~TarReader();
  TarReader(const TarReader&) = delete;
  TarReader& operator=(const TarReader&) = delete;

  bool next(TarMember& m);
  // The current member's bytes (at most lim.maxFileBytes: an ImageError "... over the limit" otherwise).
  void data(std::vector<uint8_t>& out, const std::string& member);
  void skip();

 private:
  std::string where(int64_t at) const;
  void padTo512(int64_t size);
  void checkPos() const;
  std::string path_;
  Limits lim_;
  std::FILE* f_ = nullptr;
  int64_t pos_ = 0;
  int64_t pending_ = 0;
  int64_t size_ = 0;
};

// WebDataset's key and extension: the member path split at the first '.' of its last component
// (the extension lower-cased).
void splitKey(const std::string& name, std::string& key, std::string& ext);
bool isImageExt(const std::string& ext);
// A .cls member's text as a class index in 0..kMaxLabel (surrounding white space allowed); false if not.
bool parseLabel(const std::vector<uint8_t>& bytes, int64_t& label);

// One WebDataset sample: its key and, when `error` is empty, its encoded image and class index.
struct TarSample {
  std::string key;
  std::vector<uint8_t> image;
  int64_t label = 0;
  std::string error;  // why the sample cannot be used (no image, no label, a bad label, an oversized member)
};

// The samples of a shard, in order. The first image member (.jpg, .jpeg, .png) and the first .cls
// member of a key are read; other members are skipped. A corrupt or truncated shard throws an
// ImageError (the rest of it is lost: a tar stream cannot be resynchronised).
class SampleReader {
 public:
  SampleReader(const std::string& path, const Limits& lim) : tar_(path, lim) {}
  bool next(TarSample& s);

 private:
  void add();                 // m_ into the current sample
  bool finish(TarSample& s);  // the current sample out (false if it has no key); starts a new one
  TarReader tar_;
  TarMember m_;
  bool havePending_ = false;  // m_ is read but not yet added (the first member of the next sample)
  bool end_ = false;
  TarSample cur_;
  bool hasImage_ = false, hasLabel_ = false;
  std::string key_, ext_;
  std::vector<uint8_t> label_;
};

// What a header scan finds in a shard (image and .cls bytes are not decoded; .cls members are read).
struct TarSummary {
  int64_t samples = 0;    // keys with an image member
  int64_t maxLabel = -1;  // the largest valid class index, -1 if none
  int64_t members = 0;    // regular files
};
TarSummary scanTar(const std::string& path, const Limits& lim);

}  // namespace residual::image
