// Child processes speaking a line protocol on stdin/stdout, and the C floor build.
import { execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const benchDir = fileURLToPath(new URL('..', import.meta.url));
export const childPath = (name) => fileURLToPath(new URL(`../children/${name}`, import.meta.url));

const live = new Set();

/** A child process; `next()` resolves its stdout lines in order. */
export class Child {
  constructor(cmd, args, { env } = {}) {
    this.name = `${cmd} ${args.map(String).join(' ')}`.slice(0, 120);
    this.proc = spawn(cmd, args.map(String), { stdio: ['pipe', 'pipe', 'inherit'], env: env ?? process.env });
    this.pid = this.proc.pid;
    this.lines = [];
    this.waiters = [];
    this.exit = new Promise((resolve) =>
      this.proc.once('exit', (code, signal) => {
        live.delete(this);
        this.exited = { code, signal };
        for (const w of this.waiters.splice(0))
          w.reject(new Error(`${this.name}: exited (${signal ?? code}) while a line was expected`));
        resolve(this.exited);
      }),
    );
    this.proc.once('error', (err) => {
      for (const w of this.waiters.splice(0)) w.reject(err);
    });
    this.proc.stdin.on('error', () => undefined); // EPIPE after the child exited
    createInterface({ input: this.proc.stdout }).on('line', (line) => {
      const w = this.waiters.shift();
      if (w) w.resolve(line);
      else this.lines.push(line);
    });
    live.add(this);
  }

  /** Node script child (`process.execPath`). */
  static node(script, args = [], options) {
    return new Child(process.execPath, [childPath(script), ...args], options);
  }

  /** python3 child. */
  static python(script, args = [], options) {
    return new Child('python3', ['-u', childPath(script), ...args], options);
  }

  /** The next stdout line. */
  next(timeoutMs = 60_000) {
    if (this.lines.length) return Promise.resolve(this.lines.shift());
    if (this.exited) return Promise.reject(new Error(`${this.name}: already exited (${this.exited.signal ?? this.exited.code})`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`${this.name}: no output within ${timeoutMs} ms`));
      }, timeoutMs);
      const w = {
        resolve: (l) => (clearTimeout(timer), resolve(l)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
      this.waiters.push(w);
    });
  }

  /** The next line, which must start with `word`; returns the words after it. */
  async expect(word, timeoutMs) {
    const line = await this.next(timeoutMs);
    const [head, ...rest] = line.split(' ');
    if (head !== word) throw new Error(`${this.name}: expected '${word}', got '${line}'`);
    return rest;
  }

  /** The next line, which must be `word {json}`; returns the parsed JSON. */
  async expectJson(word, timeoutMs) {
    const rest = await this.expect(word, timeoutMs);
    return JSON.parse(rest.join(' '));
  }

  send(line) {
    this.proc.stdin.write(`${line}\n`);
  }

  /** Closes stdin (children release and exit on EOF) and waits for the exit. */
  async end(timeoutMs = 30_000) {
    this.proc.stdin.end();
    const timer = setTimeout(() => this.kill('SIGKILL'), timeoutMs);
    const r = await this.exit;
    clearTimeout(timer);
    return r;
  }

  kill(signal = 'SIGKILL') {
    if (!this.exited) this.proc.kill(signal);
  }
}

/** Kills every child still running (by its own pid). */
export function reapAll() {
  for (const c of live) c.kill('SIGKILL');
}

/** Compiles bench/floor.c into `outDir`; returns the binary's path. */
export function buildFloor(outDir) {
  const out = `${outDir}/floor`;
  execFileSync('cc', ['-O2', '-Wall', '-o', out, fileURLToPath(new URL('../floor.c', import.meta.url))], { stdio: 'inherit' });
  return out;
}

/** Runs the floor binary; returns its per-op durations in µs. */
export function runFloor(bin, args) {
  const out = execFileSync(bin, args.map(String), { encoding: 'utf8', maxBuffer: 64 << 20 });
  return out
    .trim()
    .split('\n')
    .map((l) => Number(l) / 1000);
}

/** Whether python3 runs here. */
export function havePython() {
  try {
    execFileSync('python3', ['-c', 'import fcntl'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
