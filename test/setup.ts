// Test-run setup. Vitest runs test files in parallel forks; libtorch would start one intra-op thread
// per core in every fork, so on a many-core machine (the 16-core GPU host) forks x threads oversubscribe
// the CPU by 10x or more. Give each fork a fair share of the cores instead.
import os from 'node:os';
import { setNumThreads } from '../lib/index.js';

const cores = os.availableParallelism();
if (cores > 4) setNumThreads(Math.max(2, Math.floor(cores / Math.max(1, cores - 1)) * 2));
