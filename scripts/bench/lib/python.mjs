// ------------------------------------------------------------------------------------ Python side
// The PyTorch side is scripts/bench/bench.py: `serve` answers one JSON request per stdin line with one
// JSON reply per stdout line.
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { flag, opt, root } from './options.mjs';

export function findPython() {
  if (flag('no-python')) return null;
  const p = opt('python', null);
  if (typeof p === 'string') return p;
  if (process.env.RESIDUAL_TEST_PYTHON) return process.env.RESIDUAL_TEST_PYTHON;
  const s = spawnSync('bash', [path.join(root, 'scripts', 'ci', 'setup-python-torch.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (s.status === 0) return s.stdout.trim().split('\n').pop();
  console.error('(no Python with torch: scripts/ci/setup-python-torch.sh failed; residual figures only. Pass --python)');
  return null;
}

export class PySide {
  constructor(python) {
    this.python = python;
    this.proc = spawn(python, [path.join(root, 'scripts', 'bench', 'bench.py'), 'serve'], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.lines = readline.createInterface({ input: this.proc.stdout })[Symbol.asyncIterator]();
    this.proc.on('error', (e) => {
      console.error(`python: ${e.message}`);
    });
  }
  async ask(req) {
    this.proc.stdin.write(`${JSON.stringify(req)}\n`);
    const { value, done } = await this.lines.next();
    if (done) throw new Error(`bench.py exited (request ${JSON.stringify(req)})`);
    const res = JSON.parse(value);
    if (!res.ok) throw new Error(`bench.py: ${res.error} (request ${JSON.stringify(req)})`);
    return res;
  }
  async close() {
    try {
      await this.ask({ op: 'quit' });
    } catch {
      /* already gone */
    }
    this.proc.stdin.end();
  }
}
