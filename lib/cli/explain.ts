// `residual explain`: runs the degradation, gradient-flow, identity-mapping and residual-magnitude
// experiments and writes explain.html, the figures (SVG and PNG) and explain.json.
import path from 'node:path';
import { EXPLAIN_DATA, EXPLAIN_PRESETS, explain, type ExplainOptions, type ExplainPreset } from '../explain/explain.js';
import { CONFIG_SPEC } from '../train/config.js';
import { UsageError, cliMessage, helpText, parseFlags, settingFlag, type CommandSpec, type ParsedFlags } from './flags.js';

const q = EXPLAIN_PRESETS.quick;
const f = EXPLAIN_PRESETS.full;

/** A comma-separated list of depths. */
const DEPTHS = /^\d+(,\d+)*$/;

export const EXPLAIN_COMMAND: CommandSpec = {
  name: 'explain',
  usage: 'residual explain [--quick | --full] [--out DIR] [--data fashion-mnist|synthetic] [--device auto|cpu|cuda] [--seed N]',
  about: 'See why residual learning works: degradation, gradient flow, identity mappings and residual magnitude, drawn into one HTML page.',
  flags: {
    quick: { type: 'boolean', help: `minutes on 2 CPU cores: depths ${q.depths.join('/')}, ${q.iterations} iterations each (the default)` },
    full: {
      type: 'boolean',
      help: `for a GPU: depths ${f.depths.join('/')}, identity mappings at ${f.identityDepth}, ${f.iterations} iterations each`,
    },
    out: { type: 'string', valueName: 'dir', help: 'output folder', default: 'runs/explain-<preset>' },
    data: {
      type: 'string',
      choices: EXPLAIN_DATA,
      help: 'Fashion-MNIST (synthetic data where it cannot be had) or the synthetic set',
      default: 'fashion-mnist',
    },
    'data-path': settingFlag('dataPath', CONFIG_SPEC.dataPath, 'folder holding Fashion-MNIST'),
    device: settingFlag('device', CONFIG_SPEC.device, 'where to train'),
    seed: settingFlag('seed', CONFIG_SPEC.seed, 'seed for initialisation and batch order'),
    iterations: { type: 'int', range: { min: 1 }, help: 'training iterations of each network (overrides the preset)' },
    'batch-size': settingFlag('batchSize', CONFIG_SPEC.batchSize, 'batch size (overrides the preset)', { default: undefined }),
    'eval-every': { type: 'int', range: { min: 1 }, help: 'iterations between measurements (overrides the preset)' },
    'test-images': { type: 'int', range: { min: 1 }, help: 'test images per test-error measurement (overrides the preset)' },
    depths: {
      type: 'string',
      pattern: /^\d+,\d+$/,
      valueName: 'shallow,deep',
      help: 'the two depths of the degradation experiment, e.g. 20,56',
    },
    'gradient-depths': {
      type: 'string',
      pattern: DEPTHS,
      valueName: 'd1,d2,...',
      help: 'depths measured for gradient flow at initialisation, e.g. 20,56,110',
    },
    'skip-1001': { type: 'boolean', help: 'leave the pre-activation ResNet-1001 out of the gradient-flow figure' },
    workers: settingFlag('workers', CONFIG_SPEC.workers, 'data loader threads'),
  },
  notes: [
    'Trains plain, residual and pre-activation networks with one recipe on the same batches and writes explain.html',
    '(every figure with a sentence saying what this run shows), each figure as SVG and PNG, and explain.json.',
    '',
    'Examples:',
    '  residual explain --quick                 # Fashion-MNIST on the CPU, a few minutes',
    '  residual explain --full --device cuda    # the same experiments deeper and longer, for a GPU',
  ],
};

const list = (v: unknown) => String(v).split(',').map(Number);

/** The explain options from parsed flags (throws UsageError for contradictions). */
function optionsFrom(flags: ParsedFlags['flags']): ExplainOptions {
  if (flags.quick && flags.full) throw new UsageError('residual explain: choose one of --quick and --full');
  const preset: ExplainPreset = flags.full ? 'full' : 'quick';
  return {
    preset,
    out: String(flags.out ?? path.join('runs', `explain-${preset}`)),
    data: (flags.data as ExplainOptions['data']) ?? 'fashion-mnist',
    dataPath: flags['data-path'] as string | undefined,
    device: (flags.device as ExplainOptions['device']) ?? 'auto',
    seed: (flags.seed as number | undefined) ?? 0,
    workers: flags.workers as number | undefined,
    iterations: flags.iterations as number | undefined,
    batchSize: flags['batch-size'] as number | undefined,
    evalEvery: flags['eval-every'] as number | undefined,
    testImages: flags['test-images'] as number | undefined,
    depths: flags.depths === undefined ? undefined : (list(flags.depths) as [number, number]),
    gradientDepths: flags['gradient-depths'] === undefined ? undefined : list(flags['gradient-depths']),
    preact1001: flags['skip-1001'] ? false : undefined,
  };
}

/**
 * Runs `residual explain` with flags already parsed against EXPLAIN_COMMAND (the form of the CLI's
 * command table). Returns the exit status: 0 done, 1 failed; throws UsageError for bad flags.
 */
export async function runExplainFlags(parsed: ParsedFlags): Promise<number> {
  const options = optionsFrom(parsed.flags);
  const t0 = Date.now();
  try {
    const log = (m: string) => console.log(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${m}`);
    log(`residual explain, ${options.preset} preset, writing to ${options.out}`);
    const r = await explain({ ...options, onProgress: log });
    console.log('');
    for (const [name, text] of Object.entries(r.findings)) console.log(`${name}: ${text}\n`);
    console.log(`Done in ${formatDuration(r.seconds)} (CPU time ${formatDuration(r.cpuSeconds)}). Open ${r.files.html}`);
    console.log(
      `Figures (SVG and PNG): ${Object.values(r.files.figures)
        .map((x) => path.basename(x.svg, '.svg'))
        .join(', ')} in ${options.out}`,
    );
    console.log(`Numbers: ${r.files.json}`);
    return 0;
  } catch (e) {
    console.error(`residual explain: ${cliMessage(e, EXPLAIN_COMMAND.flags)}`);
    return 1;
  }
}

/** `residual explain ...` (the arguments after the command name): returns the exit status (0 done, 1 failed, 2 usage error). */
export async function runExplain(argv: string[]): Promise<number> {
  try {
    const parsed = parseFlags(EXPLAIN_COMMAND, argv);
    if (parsed.help) {
      console.log(helpText(EXPLAIN_COMMAND));
      return 0;
    }
    return await runExplainFlags(parsed);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(e.message);
      return 2;
    }
    throw e;
  }
}

function formatDuration(s: number): string {
  return s < 120 ? `${s.toFixed(0)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}
