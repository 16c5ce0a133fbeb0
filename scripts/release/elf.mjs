// What the release needs to know about (and change in) an ELF shared object: its section headers, the
// symbol versions it needs from each library (SHT_GNU_VERNEED: the dynamic linker's own list, what
// `readelf -V` prints as "Version needs"), and its RUNPATH. Node built-ins only.
//
// Why hand-written and not patchelf/readelf: reading is a few dozen lines over the section headers
// (readelf's text output is meant for people, and binutils may be absent where the release runs),
// and the one change the release makes (RUNPATH -> "$ORIGIN") is a shorter string written over the
// old one in place: no section, segment or offset moves, so `strip` before or after is safe. patchelf
// rewrites the file's layout to grow strings (and its README warns against running strip after it);
// we never need to grow one, and a clash (another string sharing the bytes) is refused with a message
// naming patchelf as the fallback.

const SHT_DYNAMIC = 6;
const SHT_DYNSYM = 11;
const SHT_GNU_VERDEF = 0x6ffffffd;
const SHT_GNU_VERNEED = 0x6ffffffe;
const DT_NEEDED = 1;
const DT_SONAME = 14;
const DT_RPATH = 15;
const DT_RUNPATH = 29;

function checkElf(buf) {
  if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46) throw new Error('not an ELF file');
  if (buf[4] !== 2 || buf[5] !== 1) throw new Error('only 64-bit little-endian ELF files are supported');
}

function cstring(buf, start) {
  const end = buf.indexOf(0, start);
  if (end < 0) throw new Error(`unterminated string at offset ${start}`);
  return buf.toString('latin1', start, end);
}

/** The section headers: type, file offset, size, link, info, entsize. */
export function sections(buf) {
  checkElf(buf);
  const shoff = Number(buf.readBigUInt64LE(0x28));
  const shentsize = buf.readUInt16LE(0x3a);
  const shnum = buf.readUInt16LE(0x3c);
  if (shoff + shnum * shentsize > buf.length) throw new Error('the section header table lies beyond the end of the file (truncated?)');
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

/** Does the file still carry a full symbol table (.symtab, SHT_SYMTAB)? `strip --strip-unneeded` removes it. */
export function hasSymtab(buf) {
  return sections(buf).some((s) => s.type === 2);
}

/**
 * The symbol versions the object needs, by library: {"libc.so.6": ["GLIBC_2.2.5", "GLIBC_2.33"], ...}
 * (SHT_GNU_VERNEED entries, in file order). An object without the section needs no versions: {}.
 */
export function versionNeeds(buf) {
  const secs = sections(buf);
  const out = {};
  for (const s of secs) {
    if (s.type !== SHT_GNU_VERNEED) continue;
    const strtab = secs[s.link];
    if (!strtab) throw new Error('the version-needs section has no string table');
    const str = (off) => cstring(buf, strtab.offset + off);
    let o = s.offset;
    for (let i = 0; i < s.info; i++) {
      const file = str(buf.readUInt32LE(o + 4));
      const names = (out[file] ??= []);
      let a = o + buf.readUInt32LE(o + 8);
      for (let j = 0; j < buf.readUInt16LE(o + 2); j++) {
        names.push(str(buf.readUInt32LE(a + 8)));
        const next = buf.readUInt32LE(a + 12);
        if (!next) break;
        a += next;
      }
      const next = buf.readUInt32LE(o + 12);
      if (!next) break;
      o += next;
    }
  }
  return out;
}

function compareVersions(a, b) {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d) return d;
  }
  return 0;
}

/**
 * The highest GLIBC_x and GLIBCXX_x versions needed by any of the objects' version needs (each as
 * versionNeeds returns it): {glibc: "2.33", glibcxx: "3.4.30"}, a field absent when nothing needs one.
 * These are what the dynamic linker checks; an older glibc or libstdc++ refuses the object.
 */
export function systemFloor(...needsList) {
  const best = {};
  for (const needs of needsList) {
    for (const names of Object.values(needs)) {
      for (const n of names) {
        const m = /^(GLIBC|GLIBCXX)_(\d+(?:\.\d+)*)$/.exec(n);
        if (!m) continue;
        const key = m[1] === 'GLIBC' ? 'glibc' : 'glibcxx';
        if (!best[key] || compareVersions(m[2], best[key]) > 0) best[key] = m[2];
      }
    }
  }
  return best;
}

/** DT_NEEDED and DT_RUNPATH/DT_RPATH of the object: {needed: [...], runpath: "..." | null}. */
export function dynamicInfo(buf) {
  const secs = sections(buf);
  const dyn = secs.find((s) => s.type === SHT_DYNAMIC);
  if (!dyn) throw new Error('no dynamic section');
  const strtab = secs[dyn.link];
  const needed = [];
  let runpath = null;
  for (let o = dyn.offset; o + 16 <= dyn.offset + dyn.size; o += 16) {
    const tag = Number(buf.readBigInt64LE(o));
    if (tag === 0) break;
    const val = Number(buf.readBigUInt64LE(o + 8));
    if (tag === DT_NEEDED) needed.push(cstring(buf, strtab.offset + val));
    else if (tag === DT_RUNPATH || tag === DT_RPATH) runpath = cstring(buf, strtab.offset + val);
  }
  return { needed, runpath };
}

/**
 * Replaces the RUNPATH (and RPATH) string of a 64-bit little-endian ELF shared object with
 * `replacement` (which must not be longer), padding with NULs so that no offset moves. Refuses if
 * another string reference points inside the old string (the linker may share string tails).
 * Returns the old value, or null when the file has no RUNPATH/RPATH.
 */
export function rewriteRunpath(buf, replacement = '$ORIGIN') {
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
