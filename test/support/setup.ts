// Test-run setup. Vitest runs test files in parallel forks; libtorch would start one intra-op thread
// per core in every fork, so on a many-core machine (the 16-core GPU host) forks x threads oversubscribe
// the CPU by 10x or more. Give each fork a fair share of the cores instead.
import os from 'node:os';
import { setNumThreads } from '../../lib/index.js';

const cores = os.availableParallelism();
if (cores > 4) setNumThreads(Math.max(2, Math.floor(cores / Math.max(1, cores - 1)) * 2));

// vitest's worker RPC gives up after 60 s: a test that blocks the event loop that long fails the whole
// run with 'Timeout calling "onTaskUpdate"', naming no test. Synchronous tests run back to back without
// an event-loop turn (only microtasks between them), so a file of many short synchronous tests blocks
// as long as all of them together: give the loop a turn after each test, and name any test that still
// blocks it for long (such a computation must yield, or run in a child process).
import { afterEach, expect } from 'vitest';
afterEach(() => new Promise<void>((res) => setImmediate(res)));
let lastTick = performance.now();
const watchdog = setInterval(() => {
  const now = performance.now();
  const blocked = now - lastTick - 1000;
  if (blocked > 15_000)
    console.warn(
      `[test setup] the event loop was blocked for ${(blocked / 1000).toFixed(1)} s in "${expect.getState().currentTestName ?? '(between tests)'}"`,
    );
  lastTick = now;
}, 1000);
watchdog.unref();
