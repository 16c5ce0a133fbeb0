// lib/cli/flags.ts: one spec parses a command's arguments and writes its --help.
import { describe, expect, it } from 'vitest';
import { UsageError, configFrom, helpText, parseFlags, type CommandSpec } from '../../lib/cli/flags.js';
import { checkRange, describeRange, inRange } from '../../lib/core/range.js';

const cmd: CommandSpec = {
  name: 'demo',
  usage: 'residual demo [--rate X] [--[no-]fast] get THING',
  about: 'A demo command.',
  positionals: { max: 3, names: 'get THING [MORE]' },
  flags: {
    rate: { type: 'number', key: 'learningRate', range: { min: 0, minExclusive: true }, help: 'a rate', default: 0.1 },
    count: { type: 'int', range: { min: 1, max: 8 }, help: 'how many' },
    fast: { type: 'boolean', help: 'go fast', default: true },
    mode: { type: 'string', choices: ['a', 'b'], help: 'the mode' },
    name: { type: 'string', required: false, help: 'a name' },
  },
};

const usage = (argv: string[]) => {
  try {
    parseFlags(cmd, argv);
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    return (e as Error).message;
  }
  throw new Error(`no error for ${argv.join(' ')}`);
};

describe('flags', () => {
  it('inherited names are not flags: --constructor, --toString, --__proto__, --no-constructor', () => {
    for (const f of ['constructor', 'toString', '__proto__', 'no-constructor', 'no-toString', 'hasOwnProperty'])
      expect(usage([`--${f}`]), f).toMatch(new RegExp(`--${f}`));
  });
  it('reads every form', () => {
    const p = parseFlags(cmd, ['get', '--rate', '0.5', '--count=3', '--no-fast', '--mode', 'b', 'x', '--', '--name']);
    expect(p.flags).toEqual({ rate: 0.5, count: 3, fast: false, mode: 'b' });
    expect(p.positionals).toEqual(['get', 'x', '--name']);
    expect(parseFlags(cmd, ['--fast=false']).flags.fast).toBe(false);
    expect(parseFlags(cmd, ['--fast=1']).flags.fast).toBe(true);
    expect(parseFlags(cmd, ['--name', '-weird-']).flags.name).toBe('-weird-');
    expect(configFrom(cmd.flags, { rate: 0.5, fast: true }, ['fast'])).toEqual({ learningRate: 0.5 });
  });

  it('--help wins, even next to a mistake', () => {
    expect(parseFlags(cmd, ['--bogus', '--help']).help).toBe(true);
    expect(parseFlags(cmd, ['-h']).help).toBe(true);
    expect(parseFlags(cmd, ['--', '--help']).help).toBe(false);
  });

  it('says what is wrong, with the flag, the value and what is allowed', () => {
    expect(usage(['--rate', '-1'])).toBe("residual demo: --rate must be a number > 0, got '-1'; see residual demo --help");
    expect(usage(['--count', '9'])).toMatch(/--count must be an integer in \[1, 8\], got '9'/);
    expect(usage(['--count', ''])).toMatch(/--count must be an integer in \[1, 8\], got ''/);
    expect(usage(['--count', '1e400'])).toMatch(/got '1e400'/);
    expect(usage(['--mode', 'c'])).toMatch(/--mode must be one of a, b, got 'c'/);
    expect(usage(['--rate'])).toMatch(/--rate needs a value \(a number > 0\)/);
    expect(usage(['--rtae', '1'])).toMatch(/unknown flag --rtae \(did you mean --rate\?\); see residual demo --help/);
    expect(usage(['--fast=maybe'])).toMatch(/--fast takes no value or true\/false, got 'maybe'/);
    expect(usage(['a', 'b', 'c', 'd'])).toMatch(/unexpected argument 'd'/);
  });

  it('--help lists every flag with range and default, and refuses a usage line naming an unknown flag', () => {
    const text = helpText(cmd);
    expect(text).toMatch(/--rate <x> +a rate \(a number > 0; default 0\.1\)/);
    expect(text).toMatch(/--count <n> +how many \(an integer in \[1, 8\]\)/);
    expect(text).toMatch(/--\[no-\]fast +go fast \(default on\)/);
    expect(text).toMatch(/--mode <a\|b> +the mode/);
    expect(() => helpText({ ...cmd, usage: 'residual demo --speed' })).toThrow(/names --speed, which is not in the flag spec/);
  });

  it('ranges', () => {
    expect(describeRange({ min: 0, max: 1, maxExclusive: true })).toBe('a number in [0, 1)');
    expect(describeRange({ integer: true })).toBe('an integer');
    expect(inRange(2 ** 53, { integer: true })).toBe(false);
    expect(inRange(NaN)).toBe(false);
    expect(() => checkRange('--x', -1, { min: 0 })).toThrow(/--x must be a number >= 0, got -1/);
  });
});
