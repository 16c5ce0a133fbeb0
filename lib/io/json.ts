// A strict JSON reader for headers we must not misread (safetensors). Unlike JSON.parse it refuses
// duplicate keys (JSON.parse silently keeps the last one, so two readers could see different files),
// returns objects as Maps (a key such as '__proto__' is an ordinary key), keeps integers that do not fit
// a double exactly as bigint, marks numbers written with a fraction or exponent, and bounds nesting.

/** A JSON number written with a fraction or an exponent (never a valid integer field). */
export class JsonFloat {
  constructor(readonly value: number) {}
}

export type JsonValue = null | boolean | string | number | bigint | JsonFloat | JsonValue[] | Map<string, JsonValue>;

/** Thrown with a message that says what is wrong and where (a character offset). */
export class JsonSyntaxError extends Error {}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);

/** Parses `text` (one JSON value, whitespace around it allowed). Throws JsonSyntaxError. */
export function parseStrictJson(text: string, maxDepth = 64): JsonValue {
  let i = 0;
  const n = text.length;
  const fail = (what: string): never => {
    throw new JsonSyntaxError(`${what} at character ${i}`);
  };
  const ws = (): void => {
    while (i < n && WS.has(text.charCodeAt(i))) i++;
  };
  const str = (): string => {
    // text[i] is '"'
    i++;
    let out = '';
    let start = i;
    for (;;) {
      if (i >= n) fail('unterminated string');
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        out += text.slice(start, i);
        i++;
        return out;
      }
      if (c < 0x20) fail('control character in a string');
      if (c !== 0x5c) {
        i++;
        continue;
      }
      out += text.slice(start, i);
      const e = text[i + 1];
      i += 2;
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          const h = text.slice(i, i + 4);
          if (!/^[0-9a-fA-F]{4}$/.test(h)) fail('bad \\u escape');
          out += String.fromCharCode(parseInt(h, 16));
          i += 4;
          break;
        }
        default:
          i -= 2;
          fail('bad escape in a string');
      }
      start = i;
    }
  };
  const NUM = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;
  const num = (): number | bigint | JsonFloat => {
    NUM.lastIndex = i;
    const m = NUM.exec(text);
    if (!m) return fail('bad number');
    i = NUM.lastIndex;
    if (m[1] !== undefined || m[2] !== undefined) return new JsonFloat(Number(m[0]));
    const v = Number(m[0]);
    return Number.isSafeInteger(v) ? v : BigInt(m[0]);
  };
  const value = (depth: number): JsonValue => {
    if (depth > maxDepth) fail(`nesting deeper than ${maxDepth}`);
    ws();
    if (i >= n) fail('unexpected end of text');
    const c = text[i];
    if (c === '{') {
      i++;
      const m = new Map<string, JsonValue>();
      ws();
      if (text[i] === '}') {
        i++;
        return m;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail('expected a string key');
        const at = i;
        const k = str();
        if (m.has(k)) {
          i = at;
          fail(`duplicate key ${JSON.stringify(k)}`);
        }
        ws();
        if (text[i] !== ':') fail("expected ':'");
        i++;
        m.set(k, value(depth + 1));
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          return m;
        }
        fail("expected ',' or '}'");
      }
    }
    if (c === '[') {
      i++;
      const a: JsonValue[] = [];
      ws();
      if (text[i] === ']') {
        i++;
        return a;
      }
      for (;;) {
        a.push(value(depth + 1));
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === ']') {
          i++;
          return a;
        }
        fail("expected ',' or ']'");
      }
    }
    if (c === '"') return str();
    if (text.startsWith('true', i)) {
      i += 4;
      return true;
    }
    if (text.startsWith('false', i)) {
      i += 5;
      return false;
    }
    if (text.startsWith('null', i)) {
      i += 4;
      return null;
    }
    return num();
  };
  const v = value(0);
  ws();
  if (i < n) fail('unexpected text after the JSON value');
  return v;
}
