// What the benchmark records about the machine: cores, CPU model, peak RSS.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Physical cores (distinct package/core pairs), or the logical CPUs where the topology is not readable. */
export function physicalCores() {
  try {
    const dir = '/sys/devices/system/cpu';
    const seen = new Set();
    for (const e of fs.readdirSync(dir)) {
      if (!/^cpu\d+$/.test(e)) continue;
      const t = path.join(dir, e, 'topology');
      if (!fs.existsSync(t)) continue;
      seen.add(
        `${fs.readFileSync(path.join(t, 'physical_package_id'), 'utf8').trim()}:${fs.readFileSync(path.join(t, 'core_id'), 'utf8').trim()}`,
      );
    }
    if (seen.size) return Math.min(seen.size, os.availableParallelism());
  } catch {
    /* fall through */
  }
  return os.availableParallelism();
}

// Peak RSS of this process image: VmHWM (getrusage's maxrss survives exec, so a child spawned from a
// big parent would report the parent's peak).
export function peakRssKB() {
  try {
    const m = /VmHWM:\s*(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]);
  } catch {
    /* not Linux */
  }
  return process.resourceUsage().maxRSS;
}

export function cpuModel() {
  return os.cpus()[0]?.model?.trim() ?? 'unknown CPU';
}
