/**
 * A real etcd for tests: `etcd` (Debian's etcd-server) started on free
 * loopback ports with a temporary data directory, one member or a cluster
 * of three, always stopped and its directory removed (`await using`).
 * Readiness is etcd's own "serving client traffic" log line (logged once
 * the member has joined the cluster through raft), never a sleep; a member
 * not ready within 20 s fails the start. Fast raft timing (50 ms heartbeat, 500 ms election) so that a
 * test that kills members stays quick; the data directories live on tmpfs
 * when there is one (etcd fsyncs every write). With `{ tls: true }`, the
 * client URLs are https:// and etcd checks client certificates: a CA, a
 * server and a client certificate are made with openssl(1) at start.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A port nobody listens on right now (the kernel's pick). */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, 'close');
  return port;
}

// A test runner killed mid-test must not leave etcd running.
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

interface Member {
  name: string;
  client: string;
  peer: string;
  dir: string;
  proc: ChildProcess | undefined;
}

/** TLS material of a cluster started with `{ tls: true }` (PEM text). */
export interface EtcdTls {
  ca: string;
  cert: string;
  key: string;
  /** Where the files are (for etcdctl). */
  files: { ca: string; cert: string; key: string };
}

/** A running etcd cluster. */
export interface EtcdCluster {
  /** Client URLs, one per member. */
  endpoints: string[];
  /** The CA and a client certificate, when started with `{ tls: true }`. */
  tls: EtcdTls | undefined;
  /** SIGKILLs member `i` and waits for it to exit. */
  kill(i: number): Promise<void>;
  /** SIGSTOPs member `i`: it keeps its connections but answers nothing (a hung host). */
  pause(i: number): void;
  /** SIGCONTs member `i`. */
  resume(i: number): void;
  /** Restarts member `i` (same data directory); resolves when it serves again. */
  restart(i: number): Promise<void>;
  /** Runs etcdctl against the cluster; resolves its stdout. */
  etcdctl(...args: string[]): Promise<string>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl in `dir`. */
function makeCerts(dir: string): { server: string[]; client: EtcdTls } {
  const f = (name: string) => join(dir, name);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ssl('req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', '2', '-subj', '/CN=xlock test CA');
  const sign = (name: string, usage: string, serial: string) => {
    ssl('req', ...ec, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', `/CN=xlock test ${name}`);
    writeFileSync(f(`${name}.ext`), `subjectAltName=IP:127.0.0.1\nextendedKeyUsage=${usage}\n`);
    ssl(
      'x509',
      '-req',
      '-in',
      f(`${name}.csr`),
      '-CA',
      f('ca.crt'),
      '-CAkey',
      f('ca.key'),
      '-set_serial',
      serial,
      '-days',
      '2',
      '-extfile',
      f(`${name}.ext`),
      '-out',
      f(`${name}.crt`),
    );
  };
  // etcd's own gateway dials the member with the server certificate: it is a client certificate too.
  sign('server', 'serverAuth,clientAuth', '2');
  sign('client', 'clientAuth', '3');
  const files = { ca: f('ca.crt'), cert: f('client.crt'), key: f('client.key') };
  return {
    server: [
      `--cert-file=${f('server.crt')}`,
      `--key-file=${f('server.key')}`,
      '--client-cert-auth',
      `--trusted-ca-file=${f('ca.crt')}`,
    ],
    client: {
      ca: readFileSync(files.ca, 'utf8'),
      cert: readFileSync(files.cert, 'utf8'),
      key: readFileSync(files.key, 'utf8'),
      files,
    },
  };
}

function launch(
  m: Member,
  cluster: string,
  state: 'new' | 'existing',
  extra: string[],
): { proc: ChildProcess; ready: Promise<void> } {
  const proc = spawn(
    'etcd',
    [
      ...extra,
      `--name=${m.name}`,
      `--data-dir=${m.dir}`,
      `--listen-client-urls=${m.client}`,
      `--advertise-client-urls=${m.client}`,
      `--listen-peer-urls=${m.peer}`,
      `--initial-advertise-peer-urls=${m.peer}`,
      `--initial-cluster=${cluster}`,
      `--initial-cluster-state=${state}`,
      '--initial-cluster-token=xlock-test',
      '--heartbeat-interval=50',
      '--election-timeout=500',
      '--logger=zap',
      '--log-level=info',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  live.add(proc);
  proc.once('exit', () => live.delete(proc));
  let log = '';
  const ready = new Promise<void>((resolve, reject) => {
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (chunk: string) => {
      if (log.length < 200_000) log += chunk;
      if (log.includes('"msg":"serving client traffic')) resolve();
    });
    setTimeout(() => reject(new Error(`etcd ${m.name} not ready after 20 s:\n${log.slice(-3000)}`)), 20_000).unref();
    proc.once('exit', (code, signal) =>
      reject(new Error(`etcd ${m.name} exited (${code ?? signal}) before it was ready:\n${log.slice(-3000)}`)),
    );
    proc.once('error', reject);
  });
  return { proc, ready };
}

async function stop(proc: ChildProcess | undefined): Promise<void> {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = once(proc, 'exit');
  proc.kill('SIGKILL');
  await exited;
}

/** Starts an etcd of `size` members (1 or 3) and waits until every member serves. */
export async function startEtcd(size: 1 | 3 = 1, options: { tls?: boolean } = {}): Promise<EtcdCluster> {
  const base = await mkdtemp(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'xlock-etcd-'));
  let certs;
  try {
    certs = options.tls ? makeCerts(base) : undefined;
  } catch (err) {
    await rm(base, { recursive: true, force: true });
    throw err;
  }
  let members: Member[] = [];
  const dispose = async () => {
    await Promise.all(members.map((m) => stop(m.proc)));
    await rm(base, { recursive: true, force: true });
  };
  // freePort() lets the port go before etcd binds it: another process may
  // take it meanwhile ("address already in use"). Start over on new ports.
  for (let attempt = 1; ; attempt++) {
    members = [];
    for (let i = 0; i < size; i++) {
      members.push({
        name: `m${i}`,
        client: `${certs ? 'https' : 'http'}://127.0.0.1:${await freePort()}`,
        peer: `http://127.0.0.1:${await freePort()}`,
        dir: join(base, `a${attempt}`, `m${i}`),
        proc: undefined,
      });
    }
    const cluster = members.map((m) => `${m.name}=${m.peer}`).join(',');
    try {
      await Promise.all(
        members.map((m) => {
          const { proc, ready } = launch(m, cluster, 'new', certs?.server ?? []);
          m.proc = proc;
          return ready;
        }),
      );
      break;
    } catch (err) {
      if (attempt < 3 && String(err).includes('address already in use')) {
        await Promise.all(members.map((m) => stop(m.proc)));
        continue;
      }
      await dispose();
      throw err;
    }
  }
  const cluster = members.map((m) => `${m.name}=${m.peer}`).join(',');
  const endpoints = members.map((m) => m.client);
  const ctlTls = certs
    ? [`--cacert=${certs.client.files.ca}`, `--cert=${certs.client.files.cert}`, `--key=${certs.client.files.key}`]
    : [];
  return {
    endpoints,
    tls: certs?.client,
    async kill(i) {
      await stop(members[i]!.proc);
    },
    pause(i) {
      members[i]!.proc?.kill('SIGSTOP');
    },
    resume(i) {
      members[i]!.proc?.kill('SIGCONT');
    },
    async restart(i) {
      const m = members[i]!;
      await stop(m.proc);
      const { proc, ready } = launch(m, cluster, 'existing', certs?.server ?? []);
      m.proc = proc;
      await ready;
    },
    async etcdctl(...args) {
      const p = spawn('etcdctl', [`--endpoints=${endpoints.join(',')}`, ...ctlTls, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, ETCDCTL_API: '3' },
      });
      let out = '';
      let err = '';
      p.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
      p.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
      const [code] = (await once(p, 'exit')) as [number | null];
      if (code !== 0) throw new Error(`etcdctl ${args.join(' ')} failed (${code}): ${err}`);
      return out;
    },
    [Symbol.asyncDispose]: dispose,
  };
}
