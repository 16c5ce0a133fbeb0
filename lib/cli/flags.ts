// Command-line flags: one spec per command, used both to parse (on Node's util.parseArgs) and to write
// that command's `--help`, so the two cannot disagree. Values are checked here: numbers must be finite
// and inside the flag's range, strings one of its choices or matching its pattern; every error is a
// UsageError naming the flag, the value and what is allowed, and pointing to --help.
import { parseArgs } from 'node:util';
import { describeRange, inRange, type NumberRange } from '../core/range.js';
import { settingsMessageOf, type Setting, type SettingNamer } from '../train/config.js';

/** A mistake on the command line: the CLI prints the message and exits with status 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export type FlagType = 'string' | 'number' | 'int' | 'boolean';

export interface FlagSpec {
  type: FlagType;
  /** One line for --help. */
  help: string;
  /** The config key the value goes to (configFrom), when it differs from the flag name. */
  key?: string;
  /** string: the allowed values. */
  choices?: readonly string[];
  /** string: a pattern the value must match, with `valueName` saying what it looks like. */
  pattern?: RegExp;
  /** Placeholder in --help (default: the choices, '<n>' for int, '<x>' for number, '<value>'). */
  valueName?: string;
  /** number/int: the allowed range (int adds `integer: true`). */
  range?: NumberRange;
  /** Shown in --help only: parsing never fills defaults in, so a command can tell what was given. */
  default?: string | number | boolean;
  /** The command cannot run without it. */
  required?: boolean;
}

export type FlagSpecs = Record<string, FlagSpec>;

export interface CommandSpec {
  /** The command's name, e.g. 'train' (messages say `residual <name>: ...`). */
  name: string;
  /** Usage line(s) after 'Usage: '. Every --flag named in them must be in `flags`. */
  usage: string;
  about: string;
  flags: FlagSpecs;
  /** Positional arguments allowed (default 0), and how --help names them. */
  positionals?: { max: number; names: string };
  /** Extra lines at the end of --help (examples, notes). */
  notes?: string[];
}

export interface ParsedFlags {
  /** By flag name (e.g. 'batch-size'); only the flags that were given. */
  flags: Record<string, string | number | boolean>;
  positionals: string[];
  /** --help or -h was given (nothing else is checked then). */
  help: boolean;
}

/** The range a numeric flag's values must lie in (int implies integers). */
export function flagRange(s: FlagSpec): NumberRange {
  return s.type === 'int' ? { ...s.range, integer: true } : { ...s.range };
}

/** Edits (insert, delete, replace, swap two neighbours) between two names: for 'did you mean'. */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1); // swapped letters
    }
  return d[a.length][b.length];
}

function unknownFlag(cmd: CommandSpec, name: string): UsageError {
  const near = Object.keys(cmd.flags)
    .map((n) => ({ n, d: editDistance(name, n) }))
    .filter((x) => x.d <= Math.max(1, Math.floor(x.n.length / 3)))
    .sort((a, b) => a.d - b.d)[0];
  return new UsageError(
    `residual ${cmd.name}: unknown flag ${name.length === 1 ? '-' : '--'}${name}${near ? ` (did you mean --${near.n}?)` : ''}; see residual ${cmd.name} --help`,
  );
}

/** Checks and converts one value of a flag that takes a value. */
function convert(cmd: CommandSpec, name: string, s: FlagSpec, value: string): string | number {
  const bad = (what: string) =>
    new UsageError(`residual ${cmd.name}: --${name} must be ${what}, got '${value}'; see residual ${cmd.name} --help`);
  if (s.type === 'number' || s.type === 'int') {
    const r = flagRange(s);
    const n = value.trim() === '' ? NaN : Number(value);
    if (!inRange(n, r)) throw bad(describeRange(r));
    return n;
  }
  if (s.choices && !s.choices.includes(value)) throw bad(`one of ${s.choices.join(', ')}`);
  if (s.pattern && !s.pattern.test(value))
    throw bad(s.valueName?.includes('|') ? `one of ${s.valueName.split('|').join(', ')}` : (s.valueName ?? `like ${String(s.pattern)}`));
  return value;
}

/**
 * Parses `argv` (the arguments after the command name) against `cmd.flags`:
 * `--flag value`, `--flag=value`, booleans as `--flag`, `--no-flag` or `--flag=true|false|1|0`,
 * `--` ends the flags. A value may start with '-' (`--lr -1` is read as the value -1, then checked).
 * Throws UsageError for unknown flags, missing or invalid values, unexpected positional arguments and
 * missing required flags.
 */
export function parseFlags(cmd: CommandSpec, argv: readonly string[]): ParsedFlags {
  const spec = cmd.flags;
  // Normalise to what util.parseArgs reads unambiguously: every value inline (`--flag=value`), so a
  // value starting with '-' is not taken for a flag, and booleans' true/false forms as --flag/--no-flag.
  // --help wins over everything else (before a `--`), so it works even next to a mistake.
  const end = argv.indexOf('--');
  if ((end < 0 ? argv : argv.slice(0, end)).some((a) => a === '--help' || a === '-h')) return { flags: {}, positionals: [], help: true };
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      args.push(...argv.slice(i));
      break;
    }
    if (!a.startsWith('--')) {
      if (a.startsWith('-') && a.length > 1 && !/^-[\d.]/.test(a)) throw unknownFlag(cmd, a.slice(1));
      args.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const raw = eq < 0 ? a.slice(2) : a.slice(2, eq);
    const inline = eq < 0 ? undefined : a.slice(eq + 1);
    const negated =
      !Object.hasOwn(spec, raw) && raw.startsWith('no-') && Object.hasOwn(spec, raw.slice(3)) && spec[raw.slice(3)].type === 'boolean';
    const name = negated ? raw.slice(3) : raw;
    const s = Object.hasOwn(spec, name) ? spec[name] : undefined;
    if (!s) throw unknownFlag(cmd, raw);
    if (s.type === 'boolean') {
      if (inline === undefined) args.push(`--${raw}`);
      else if (negated) throw new UsageError(`residual ${cmd.name}: --${raw} takes no value, got '${inline}'`);
      else if (['true', '1'].includes(inline)) args.push(`--${name}`);
      else if (['false', '0'].includes(inline)) args.push(`--no-${name}`);
      else throw new UsageError(`residual ${cmd.name}: --${name} takes no value or true/false, got '${inline}'`);
      continue;
    }
    let value = inline;
    if (value === undefined) {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--'))
        throw new UsageError(
          `residual ${cmd.name}: --${name} needs a value (${s.valueName ?? placeholderWords(s)}); see residual ${cmd.name} --help`,
        );
      value = next;
      i++;
    }
    args.push(`--${name}=${value}`);
  }

  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {};
  for (const [n, s] of Object.entries(spec)) options[n] = { type: s.type === 'boolean' ? 'boolean' : 'string' };
  let parsed: { values: Record<string, string | boolean | undefined | (string | boolean)[]>; positionals: string[] };
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: true, allowNegative: true }) as typeof parsed;
  } catch (e) {
    // Everything parseArgs rejects was caught above; this is a backstop with the same form.
    throw new UsageError(`residual ${cmd.name}: ${(e as Error).message}; see residual ${cmd.name} --help`);
  }
  const flags: Record<string, string | number | boolean> = {};
  for (const [n, v] of Object.entries(parsed.values)) {
    if (v === undefined || Array.isArray(v)) continue;
    flags[n] = typeof v === 'boolean' ? v : convert(cmd, n, spec[n], v);
  }
  const max = cmd.positionals?.max ?? 0;
  if (parsed.positionals.length > max) {
    const extra = parsed.positionals[max];
    throw new UsageError(
      `residual ${cmd.name}: unexpected argument '${extra}'${max ? '' : ' (this command takes only --flags)'}; see residual ${cmd.name} --help`,
    );
  }
  for (const [n, s] of Object.entries(spec))
    if (s.required && flags[n] === undefined)
      throw new UsageError(`residual ${cmd.name}: --${n} is required: ${s.help}; see residual ${cmd.name} --help`);
  return { flags, positionals: parsed.positionals, help: false };
}

/** The flags as config values, under each flag's `key` (or its name); `skip` names flags to leave out. */
export function configFrom(spec: FlagSpecs, flags: Record<string, unknown>, skip: readonly string[] = []): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [n, v] of Object.entries(flags)) if (!skip.includes(n) && Object.hasOwn(spec, n)) out[spec[n].key ?? n] = v;
  return out;
}

function placeholderWords(s: FlagSpec): string {
  if (s.choices) return s.choices.join(', ');
  if (s.type === 'number' || s.type === 'int') return describeRange(flagRange(s));
  return 'a value';
}

function placeholder(s: FlagSpec): string {
  if (s.type === 'boolean') return '';
  if (s.valueName) return ` <${s.valueName}>`;
  if (s.choices) return ` <${s.choices.join('|')}>`;
  return s.type === 'int' ? ' <n>' : s.type === 'number' ? ' <x>' : ' <value>';
}

/** The --help text of a command, from its spec: usage, about, every flag with its range and default. */
export function helpText(cmd: CommandSpec): string {
  for (const m of cmd.usage.matchAll(/--(?:\[no-\])?([a-z][a-z0-9-]*)/g))
    if (!(m[1] in cmd.flags) && m[1] !== 'help')
      throw new Error(`residual ${cmd.name}: the usage line names --${m[1]}, which is not in the flag spec`);
  const lines = [`Usage: ${cmd.usage}`, '', cmd.about, '', 'Options:'];
  const entries: [string, string][] = Object.entries(cmd.flags).map(([n, s]) => {
    const left = `${s.type === 'boolean' && s.default === true ? `--[no-]${n}` : `--${n}`}${placeholder(s)}`;
    const facts: string[] = [];
    if (s.required) facts.push('required');
    if ((s.type === 'number' || s.type === 'int') && (s.range || s.type === 'int')) facts.push(describeRange(flagRange(s)));
    if (s.default !== undefined) facts.push(`default ${s.type === 'boolean' ? (s.default ? 'on' : 'off') : String(s.default)}`);
    return [left, facts.length ? `${s.help} (${facts.join('; ')})` : s.help];
  });
  entries.push(['--help, -h', 'show this help']);
  const w = Math.min(34, Math.max(...entries.map(([l]) => l.length)));
  for (const [l, r] of entries) lines.push(l.length > w ? `  ${l}\n  ${' '.repeat(w)}  ${r}` : `  ${l.padEnd(w)}  ${r}`);
  if (Object.values(cmd.flags).some((s) => s.type === 'boolean'))
    lines.push('', 'Booleans also take --no-<flag> or --<flag>=true|false; any flag takes --flag=value.');
  if (cmd.notes?.length) lines.push('', ...cmd.notes);
  return lines.join('\n');
}

// ---- settings (lib/train/config.ts) as flags ------------------------------------------------------

/**
 * The flag of a config key: batchSize -> batch-size. The one mapping between the library's settings and
 * the CLI's flags: the settings' flag specs are made with it (settingFlag), and messages about settings
 * are rendered back through those specs (settingsNamer).
 */
export function flagOf(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** The flag spec of a setting: its type, range or choices and default from the config spec; the help text from the command. */
export function settingFlag(key: string, s: Setting, help: string, extra: Partial<FlagSpec> = {}): FlagSpec {
  let out: FlagSpec;
  switch (s.type) {
    case 'int':
    case 'number':
      out = { type: s.type, range: s.range, help };
      break;
    case 'boolean':
      out = { type: 'boolean', help };
      break;
    case 'choice':
      out = { type: 'string', choices: s.choices, help };
      break;
    default:
      out = { type: 'string', help };
      if (s.pattern) out.pattern = s.pattern;
      if (s.valueName) out.valueName = s.valueName;
  }
  if (flagOf(key) !== key) out.key = key;
  const shown = s.default ?? ('unset' in s ? s.unset : undefined);
  if (shown !== undefined) out.default = shown;
  return { ...out, ...extra };
}

/** Names settings as a command's flags: the flag whose `key` is the setting's (settings without a flag keep their key). */
export function settingsNamer(spec: FlagSpecs): SettingNamer {
  const flagFor = (key: string): string | undefined => Object.keys(spec).find((n) => (spec[n].key ?? n) === key);
  return {
    audience: 'cli',
    name: (key) => {
      const f = flagFor(key);
      return f ? `--${f}` : key;
    },
    setting: (key, value) => {
      const f = flagFor(key);
      if (!f) return `${key} ${String(value)}`;
      if (spec[f].type === 'boolean') return value === false ? `--no-${f}` : `--${f}`;
      return `--${f} ${String(value)}`;
    },
  };
}

/** An error's message for a CLI user: messages about settings name the command's flags (lib/train/config.ts's SettingsMessage). */
export function cliMessage(e: unknown, spec: FlagSpecs): string {
  const m = settingsMessageOf(e);
  return m ? m.render(settingsNamer(spec)) : String((e as Error)?.message ?? e);
}
