// Where wheel files lie on this machine: pip's find-links and file:// indexes (from its environment
// variables and configuration files), plus /opt/wheels. An operator's and test tool only (the mirror
// and manifest scripts): residual's install never reads pip's configuration. Node built-ins only, so
// it runs in a fresh clone before `npm install`.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

function pipConfigFiles() {
  if (process.env.PIP_CONFIG_FILE)
    return process.env.PIP_CONFIG_FILE === '/dev/null' || process.env.PIP_CONFIG_FILE === 'os.devnull' ? [] : [process.env.PIP_CONFIG_FILE];
  const xdg = (process.env.XDG_CONFIG_DIRS || '/etc/xdg').split(':').map((d) => path.join(d, 'pip', 'pip.conf'));
  const home = os.homedir();
  return [
    '/etc/pip.conf',
    ...xdg,
    path.join(process.env.XDG_CONFIG_HOME || path.join(home, '.config'), 'pip', 'pip.conf'),
    path.join(home, '.pip', 'pip.conf'),
    ...(process.env.VIRTUAL_ENV ? [path.join(process.env.VIRTUAL_ENV, 'pip.conf')] : []),
  ];
}

/** Values of find-links / index-url / extra-index-url in pip's ini files (any section). */
function pipConfigValues() {
  const out = [];
  for (const f of pipConfigFiles()) {
    let text;
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    let key = null;
    for (const line of text.split('\n')) {
      if (/^\s*[#;]/.test(line) || /^\s*\[/.test(line)) {
        key = null;
        continue;
      }
      const m = /^\s*([\w-]+)\s*=\s*(.*)$/.exec(line);
      if (m) {
        key = m[1].replace(/_/g, '-');
        if (['find-links', 'index-url', 'extra-index-url'].includes(key)) out.push(...m[2].split(/\s+/).filter(Boolean));
        else key = null;
      } else if (key && /^\s+\S/.test(line)) out.push(...line.trim().split(/\s+/));
    }
  }
  return out;
}

function toDir(v) {
  let p = v;
  if (/^file:/.test(v)) {
    try {
      p = fileURLToPath(v);
    } catch {
      return [];
    }
  } else if (/^[a-z]+:\/\//i.test(v)) return [];
  p = path.resolve(p);
  // A PEP 503 index (…/simple) keeps its files beside it in the layouts seen here (…/files).
  return path.basename(p) === 'simple' ? [path.join(path.dirname(p), 'files'), p] : [p];
}

/** Folders that may hold wheel files, most specific first, existing ones only. */
export function localWheelDirs(extra = []) {
  const vals = [
    ...extra,
    ...(process.env.PIP_FIND_LINKS || '').split(/\s+/),
    ...(process.env.PIP_INDEX_URL || '').split(/\s+/),
    ...(process.env.PIP_EXTRA_INDEX_URL || '').split(/\s+/),
    ...pipConfigValues(),
    '/opt/wheels',
  ].filter(Boolean);
  const dirs = [];
  for (const v of vals) for (const d of toDir(v)) if (!dirs.includes(d) && fs.existsSync(d) && fs.statSync(d).isDirectory()) dirs.push(d);
  return dirs;
}

/** The first local copy of `name` in `dirs` (also one level down), or null. */
export function findLocalFile(name, dirs = localWheelDirs()) {
  for (const d of dirs) {
    const direct = path.join(d, name);
    if (fs.existsSync(direct)) return direct;
  }
  for (const d of dirs) {
    let subs;
    try {
      subs = fs.readdirSync(d, { withFileTypes: true }).filter((e) => e.isDirectory());
    } catch {
      continue;
    }
    for (const s of subs) {
      const f = path.join(d, s.name, name);
      if (fs.existsSync(f)) return f;
    }
  }
  return null;
}
