// The mutation fuzzers' runner: cases run in child processes, each child reports one JSON line per case
// (`{start: i}` when it begins one, then its result, and `{done: true, maxRSS}` at the end). A child that
// dies or stalls past its bound is recorded as a crash of the case it was on and replaced, from the next
// case on. Used by test/hardening/*.fuzz.test.ts; each has its own child script and result shape.
import { spawn } from 'node:child_process';
import readline from 'node:readline';

export interface ChildCasesOptions {
  /** The child script, and the arguments after it; the index of the first case is inserted after `args[0]`. */
  child: string;
  args: [string, ...string[]];
  /** How many cases, and a short description of each (for crash messages). */
  count: number;
  what: (i: number) => string;
  /** The bound of one case, and of the child's startup (libtorch and what the child loads). */
  caseLimitMs: number;
  startupMs?: number;
}

export interface ChildCasesOutcome<R> {
  results: R[];
  crashes: string[];
  maxRSS: number;
}

export async function runChildCases<R>(o: ChildCasesOptions): Promise<ChildCasesOutcome<R>> {
  const results: R[] = [];
  const crashes: string[] = [];
  let maxRSS = 0;
  let from = 0;
  while (from < o.count) {
    let current = -1;
    let done = false;
    let stderr = '';
    const [first, ...rest] = o.args;
    const p = spawn(process.execPath, ['--max-old-space-size=512', o.child, first, String(from), ...rest], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    p.stderr.on('data', (d) => (stderr = (stderr + d).slice(-2000)));
    let timer: NodeJS.Timeout | undefined;
    // Startup may take a while on a busy machine; after that, each case has its bound.
    const arm = (ms: number) => {
      clearTimeout(timer);
      timer = setTimeout(() => p.kill('SIGKILL'), ms);
    };
    arm(o.startupMs ?? 120_000);
    readline.createInterface({ input: p.stdout }).on('line', (l) => {
      const m = JSON.parse(l);
      if (m.start !== undefined) {
        current = m.start;
        arm(o.caseLimitMs * 4);
      } else if (m.done) {
        done = true;
        maxRSS = Math.max(maxRSS, m.maxRSS);
      } else results.push(m as R);
    });
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((res) => p.on('close', (c, s) => res([c, s])));
    clearTimeout(timer);
    if (done && code === 0) break;
    const at = current >= 0 ? current : from;
    crashes.push(
      `case ${at} (${o.what(at)}): child ${signal ? `killed by ${signal}` : `exited with ${code}`}${signal === 'SIGKILL' ? ' (hang or runaway allocation?)' : ''}; stderr: ${stderr.trim().split('\n').slice(-3).join(' | ')}`,
    );
    from = at + 1;
  }
  return { results, crashes, maxRSS };
}
