// Files and tar shards (see tar.h).
#include "image/tar.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

namespace residual::image {

std::FILE* openRegular(const std::string& path, int64_t& size) {
  // O_NONBLOCK so that opening a FIFO does not wait for a writer; cleared once the file is known regular.
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw ImageError(std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ImageError("cannot open: not a regular file");
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl != -1) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  std::FILE* f = fdopen(fd, "rb");
  if (!f) {
    int e = errno;
    ::close(fd);
    throw ImageError(std::string("cannot open: ") + std::strerror(e));
  }
  size = int64_t(st.st_size);
  return f;
}

std::vector<uint8_t> readFile(const std::string& path, const Limits& lim) {
  int64_t fileSize = 0;
  std::FILE* f = openRegular(path, fileSize);
  std::vector<uint8_t> buf;
  if (fseeko(f, 0, SEEK_END) == 0) {
    off_t n = ftello(f);
    if (n > lim.maxFileBytes) {
      std::fclose(f);
      throw ImageError("file is " + std::to_string(int64_t(n)) + " bytes, over the limit of " + std::to_string(lim.maxFileBytes) +
                       " (maxFileBytes)");
    }
    std::rewind(f);
    if (n > 0) buf.resize(size_t(n));
  }
  size_t got = buf.empty() ? 0 : std::fread(buf.data(), 1, buf.size(), f);
  bool bad = std::ferror(f);
  std::fclose(f);
  if (bad || got != buf.size()) throw ImageError("read error");
  return buf;
}

// ---- tar ---------------------------------------------------------------------------------------

namespace {

bool allZero(const uint8_t* b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (b[i]) return false;
  return true;
}

// A numeric header field: octal (space or NUL padded), or GNU base-256 for sizes of 8 GiB and more.
// `ok` is false for a malformed field or a value over 2^52.
int64_t tarNumber(const uint8_t* f, size_t n, bool& ok) {
  ok = true;
  if (f[0] & 0x80) {
    if (f[0] != 0x80) {
      ok = false;
      return 0;
    }
    int64_t v = 0;
    for (size_t i = 1; i < n; i++) {
      if (v > (int64_t(1) << 52)) {
        ok = false;
        return 0;
      }
      v = (v << 8) | f[i];
    }
    return v;
  }
  int64_t v = 0;
  size_t i = 0;
  while (i < n && f[i] == ' ') i++;
  bool any = false;
  for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
    v = v * 8 + (f[i] - '0');
    any = true;
    if (v > (int64_t(1) << 52)) {
      ok = false;
      return 0;
    }
  }
  for (; i < n; i++)
    if (f[i] != 0 && f[i] != ' ') ok = false;
  if (!any) v = 0;
  return v;
}

}  // namespace

TarReader::TarReader(const std::string& path, const Limits& lim) : path_(path), lim_(lim) {
  f_ = openRegular(path, size_);
  std::setvbuf(f_, nullptr, _IOFBF, 1 << 16);
}

TarReader::~TarReader() {
  if (f_) std::fclose(f_);
}

bool TarReader::next(TarMember& m) {
  if (pending_ > 0) skip();
  std::string longName;
  for (;;) {
    uint8_t h[512];
    int64_t at = pos_;
    size_t got = std::fread(h, 1, 512, f_);
    if (got == 0 && std::feof(f_)) return false;  // no end-of-archive blocks: tolerated
    if (got != 512) throw ImageError(where(at) + "truncated tar header");
    pos_ += 512;
    if (allZero(h, 512)) return false;  // end of archive
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += (i >= 148 && i < 156) ? ' ' : h[i];
    bool ok;
    int64_t want = tarNumber(h + 148, 8, ok);
    if (!ok || int64_t(sum) != want) throw ImageError(where(at) + "bad tar header checksum (not a tar file, or corrupt)");
    int64_t size = tarNumber(h + 124, 12, ok);
    if (!ok || size < 0) throw ImageError(where(at) + "bad size field in tar header");
    char type = char(h[156]);
    std::string name(reinterpret_cast<char*>(h), strnlen(reinterpret_cast<char*>(h), 100));
    if (std::memcmp(h + 257, "ustar", 5) == 0 && h[345]) {
      std::string prefix(reinterpret_cast<char*>(h + 345), strnlen(reinterpret_cast<char*>(h + 345), 155));
      name = prefix + "/" + name;
    }
    if (type == 'L' || type == 'x') {  // GNU long name; pax extended header (we read only path=)
      if (size > (1 << 20)) throw ImageError(where(at) + "oversized extended header");
      std::string body(size_t(size), '\0');
      if (size && std::fread(&body[0], 1, size_t(size), f_) != size_t(size)) throw ImageError(where(at) + "truncated tar member");
      pos_ += size;
      padTo512(size);
      if (type == 'L') {
        longName = std::string(body.c_str());
      } else {
        // records "<len> <key>=<value>\n", len counting the whole record
        size_t p = 0;
        while (p < body.size()) {
          if (body[p] == '\0') break;  // NUL padding after the records
          size_t q = p, len = 0;
          while (q < body.size() && body[q] >= '0' && body[q] <= '9' && q - p < 8) len = len * 10 + size_t(body[q++] - '0');
          if (q == p || q >= body.size() || body[q] != ' ' || len < q - p + 2 || len > body.size() - p || body[p + len - 1] != '\n')
            throw ImageError(where(at) + "malformed pax extended header record");
          const size_t sp = q;
          std::string rec = body.substr(sp + 1, p + len - sp - 2);
          if (rec.compare(0, 5, "path=") == 0) longName = rec.substr(5);
          p += len;
        }
      }
      continue;
    }
    if (!longName.empty()) name = longName;
    if (type == '0' || type == '\0' || type == '7') {
      m.name = name;
      m.size = size;
      m.offset = at;
      pending_ = size;
      return true;
    }
    // directories, links, global pax headers...: skip their data
    pending_ = size;
    skip();
    longName.clear();
  }
}

void TarReader::data(std::vector<uint8_t>& out, const std::string& member) {
  if (pending_ > lim_.maxFileBytes)
    throw ImageError(path_ + ": member " + member + " is " + std::to_string(pending_) + " bytes, over the limit of " +
                     std::to_string(lim_.maxFileBytes) + " (maxFileBytes)");
  out.resize(size_t(pending_));
  if (pending_ && std::fread(out.data(), 1, size_t(pending_), f_) != size_t(pending_))
    throw ImageError(path_ + ": member " + member + " is truncated");
  pos_ += pending_;
  padTo512(pending_);
  pending_ = 0;
}

void TarReader::skip() {
  int64_t n = (pending_ + 511) / 512 * 512;
  if (n && fseeko(f_, off_t(n), SEEK_CUR) != 0) throw ImageError(where(pos_) + "cannot seek");
  pos_ += n;
  pending_ = 0;
  checkPos();
}

std::string TarReader::where(int64_t at) const { return path_ + " at byte " + std::to_string(at) + ": "; }

void TarReader::padTo512(int64_t size) {
  int64_t pad = (512 - size % 512) % 512;
  if (pad) {
    if (fseeko(f_, off_t(pad), SEEK_CUR) != 0) throw ImageError(where(pos_) + "cannot seek");
    pos_ += pad;
    checkPos();
  }
}

// fseeko past the end succeeds: a member cut short by truncation shows as a position beyond the file.
void TarReader::checkPos() const {
  if (pos_ > size_) throw ImageError(where(pos_) + "truncated tar member (the file is " + std::to_string(size_) + " bytes)");
}

// ---- WebDataset samples ------------------------------------------------------------------------

void splitKey(const std::string& name, std::string& key, std::string& ext) {
  size_t slash = name.rfind('/');
  size_t dot = name.find('.', slash == std::string::npos ? 0 : slash + 1);
  if (dot == std::string::npos) {
    key = name;
    ext.clear();
  } else {
    key = name.substr(0, dot);
    ext = name.substr(dot + 1);
  }
  for (auto& ch : ext) ch = char(std::tolower(static_cast<unsigned char>(ch)));
}

bool isImageExt(const std::string& e) { return e == "jpg" || e == "jpeg" || e == "png"; }

bool parseLabel(const std::vector<uint8_t>& b, int64_t& v) {
  std::string s(b.begin(), b.end());
  size_t a = s.find_first_not_of(" \t\r\n"), z = s.find_last_not_of(" \t\r\n");
  if (a == std::string::npos) return false;
  s = s.substr(a, z - a + 1);
  if (s.empty() || s.size() > 18) return false;
  v = 0;
  for (char ch : s) {
    if (ch < '0' || ch > '9') return false;
    v = v * 10 + (ch - '0');
  }
  return v <= kMaxLabel;
}

namespace {
constexpr int64_t kMaxClsBytes = 64;
}

bool SampleReader::next(TarSample& s) {
  for (;;) {
    if (!havePending_) {
      if (end_ || !tar_.next(m_)) {
        end_ = true;
        return finish(s);
      }
      havePending_ = true;
    }
    splitKey(m_.name, key_, ext_);
    if (key_ != cur_.key) {
      // a new key: the sample before it is complete (its member stays pending until the next call, so
      // an error reading it cannot take the finished sample with it)
      bool emitted = finish(s);
      cur_.key = key_;
      if (emitted) return true;
    }
    havePending_ = false;
    add();
  }
}

void SampleReader::add() {
  if (isImageExt(ext_) && !hasImage_) {
    try {
      tar_.data(cur_.image, m_.name);
      hasImage_ = true;
    } catch (const ImageError& e) {
      if (std::string(e.what()).find("over the limit") == std::string::npos) throw;
      tar_.skip();
      cur_.error = e.what();
    }
  } else if (ext_ == "cls" && !hasLabel_) {
    if (m_.size > kMaxClsBytes) {
      tar_.skip();
      cur_.error = "bad .cls member (more than 64 bytes)";
    } else {
      tar_.data(label_, m_.name);
      if (parseLabel(label_, cur_.label))
        hasLabel_ = true;
      else
        cur_.error = "bad .cls member (not a class index in 0.." + std::to_string(kMaxLabel) + ")";
    }
  } else {
    tar_.skip();
  }
}

bool SampleReader::finish(TarSample& s) {
  bool emit = !cur_.key.empty();  // members with an empty key (e.g. ".cls") belong to no sample
  if (emit) {
    if (cur_.error.empty() && !hasImage_)
      cur_.error = "sample has no .jpg, .jpeg or .png member";
    else if (cur_.error.empty() && !hasLabel_)
      cur_.error = "sample has no .cls member (an integer class index)";
    s = std::move(cur_);
  }
  cur_ = TarSample();
  hasImage_ = hasLabel_ = false;
  return emit;
}

TarSummary scanTar(const std::string& path, const Limits& lim) {
  TarSummary out;
  try {
    TarReader tr(path, lim);
    TarMember m;
    std::string curKey, key, ext;
    bool img = false;
    std::vector<uint8_t> lb;
    while (tr.next(m)) {
      out.members++;
      splitKey(m.name, key, ext);
      if (key != curKey) {
        if (img) out.samples++;
        img = false;
        curKey = key;
      }
      if (isImageExt(ext)) img = true;
      if (ext == "cls" && m.size <= kMaxClsBytes) {
        tr.data(lb, m.name);
        int64_t v;
        if (parseLabel(lb, v)) out.maxLabel = std::max(out.maxLabel, v);
      }
    }
    if (img) out.samples++;
  } catch (const ImageError& e) {
    std::string msg = e.what();
    if (msg.compare(0, path.size(), path) == 0) throw;
    throw ImageError(path + ": " + msg);
  }
  return out;
}

}  // namespace residual::image
