// A client of c10d's TCPStore protocol (the store rank 0 or `residual launch` hosts: native/distributed/store.cpp),
// for the launcher's agents, which coordinate restarts through the job's store without loading a
// process group. Written here because no npm package speaks this protocol; it is small: a query-type
// byte, then fields (a string or value is a uint64 length and its bytes; integers little-endian, as
// libtorch sends them on the platforms it ships for). Ranks use libtorch's own client.
//
// Every reply is bounded: a reply longer than MAX_REPLY bytes, or one that does not come within the
// request's timeout, fails the request and closes the connection (the next request reconnects).
import net from 'node:net';

const VALIDATE = 0,
  SET = 1,
  GET = 3,
  ADD = 4,
  CHECK = 5,
  PING = 13;
const MAGIC = 0x3c85f7ce;
const MAX_REPLY = 64 * 1024 * 1024;

type Want = 'i64' | 'u8' | 'u32' | 'bytes';
interface Pending {
  want: Want;
  resolve: (v: bigint | number | Buffer) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}
function field(v: string | Buffer): Buffer {
  const b = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
  return Buffer.concat([u64(b.length), b]);
}

export class StoreClient {
  private sock: net.Socket | null = null;
  private connecting: Promise<net.Socket> | null = null;
  private buf: Buffer = Buffer.alloc(0);
  private pending: Pending[] = [];
  private closed = false;

  /** `timeoutMs` bounds each request, and each attempt to connect. */
  constructor(
    readonly host: string,
    readonly port: number,
    readonly timeoutMs: number,
  ) {}

  /** Connects (retrying while the server is not up yet) until `deadlineMs` from now. */
  async connect(deadlineMs = this.timeoutMs): Promise<void> {
    const end = Date.now() + deadlineMs;
    for (;;) {
      try {
        await this.socket();
        await this.request(Buffer.concat([Buffer.from([PING]), Buffer.from(new Uint32Array([process.pid & 0x7fffffff]).buffer)]), 'u32');
        return;
      } catch (e) {
        this.drop(e as Error);
        if (this.closed || Date.now() + 200 > end)
          throw new Error(`could not reach the job's store at ${this.host}:${this.port}: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  async set(key: string, value: string | Buffer): Promise<void> {
    // SET has no reply: a PING after it confirms the server has applied it (replies come in order).
    await this.request(Buffer.concat([Buffer.from([SET]), field(key), field(value)]), null);
    await this.request(Buffer.concat([Buffer.from([PING]), Buffer.from([1, 0, 0, 0])]), 'u32');
  }
  /** The value of `key` (empty when it is absent). */
  async get(key: string): Promise<Buffer> {
    return (await this.request(Buffer.concat([Buffer.from([GET]), field(key)]), 'bytes')) as Buffer;
  }
  /** Adds `n` to the counter `key` and returns its new value. */
  async add(key: string, n: number): Promise<number> {
    const b = Buffer.alloc(8);
    b.writeBigInt64LE(BigInt(n));
    const v = (await this.request(Buffer.concat([Buffer.from([ADD]), field(key), b]), 'i64')) as bigint;
    return Number(v);
  }
  /** Whether every key is present. */
  async check(keys: string[]): Promise<boolean> {
    const r = await this.request(Buffer.concat([Buffer.from([CHECK]), u64(keys.length), ...keys.map((k) => field(k))]), 'u8');
    return r === 0;
  }

  close(): void {
    this.closed = true;
    this.drop(new Error('the store client was closed'));
  }

  private socket(): Promise<net.Socket> {
    if (this.sock) return Promise.resolve(this.sock);
    if (this.closed) return Promise.reject(new Error('the store client was closed'));
    this.connecting ??= new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: this.host, port: this.port });
      s.setNoDelay(true);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error(`connecting timed out after ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        const hello = Buffer.alloc(5);
        hello[0] = VALIDATE;
        hello.writeUInt32LE(MAGIC, 1);
        s.write(hello);
        this.sock = s;
        this.buf = Buffer.alloc(0);
        s.on('data', (d: Buffer) => this.onData(d));
        s.on('error', (e) => this.drop(e));
        s.on('close', () => this.drop(new Error('the store closed the connection')));
        resolve(s);
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
        this.drop(e);
      });
    }).finally(() => {
      this.connecting = null;
    });
    return this.connecting;
  }

  private async request(bytes: Buffer, want: Want | null): Promise<bigint | number | Buffer | undefined> {
    const s = await this.socket();
    if (want === null) {
      s.write(bytes);
      return undefined;
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.drop(new Error(`no reply from the store within ${this.timeoutMs} ms`)), this.timeoutMs);
      this.pending.push({ want, resolve, reject, timer });
      s.write(bytes);
    });
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    while (this.pending.length) {
      const p = this.pending[0];
      let v: bigint | number | Buffer;
      let used: number;
      if (p.want === 'u8') {
        if (this.buf.length < 1) return;
        v = this.buf[0];
        used = 1;
      } else if (p.want === 'u32') {
        if (this.buf.length < 4) return;
        v = this.buf.readUInt32LE(0);
        used = 4;
      } else if (p.want === 'i64') {
        if (this.buf.length < 8) return;
        v = this.buf.readBigInt64LE(0);
        used = 8;
      } else {
        if (this.buf.length < 8) return;
        const len = this.buf.readBigUInt64LE(0);
        if (len > BigInt(MAX_REPLY)) {
          this.drop(new Error(`the store announced a reply of ${len} bytes (limit ${MAX_REPLY})`));
          return;
        }
        if (this.buf.length < 8 + Number(len)) return;
        v = Buffer.from(this.buf.subarray(8, 8 + Number(len)));
        used = 8 + Number(len);
      }
      this.buf = this.buf.subarray(used);
      this.pending.shift();
      clearTimeout(p.timer);
      p.resolve(v);
    }
    if (this.buf.length) this.drop(new Error('the store sent bytes nobody asked for'));
  }

  /** Fails every pending request and forgets the connection (the next request opens a new one). */
  private drop(e: Error): void {
    const s = this.sock;
    this.sock = null;
    this.buf = Buffer.alloc(0);
    if (s) {
      s.removeAllListeners('data');
      s.removeAllListeners('close');
      s.removeAllListeners('error');
      s.on('error', () => {});
      s.destroy();
    }
    const ps = this.pending;
    this.pending = [];
    for (const p of ps) {
      clearTimeout(p.timer);
      p.reject(e);
    }
  }
}
