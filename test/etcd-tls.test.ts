/**
 * @x/etcd over TLS against a real etcd that checks client certificates
 * (`--client-cert-auth`; certificates made with openssl at start, see
 * test/helpers/etcd.ts): locking works with the CA and a client
 * certificate, and is refused (EUNAVAILABLE, nothing left) without them.
 */
import { expect, test } from 'vitest';
import { isLockError } from '@x/core';
import { EtcdLocks } from '@x/etcd';
import { rejectionOf } from './helpers/core-util.js';
import { startEtcd } from './helpers/etcd.js';
import { haveTools } from './helpers/tools.js';

test.runIf(haveTools('etcd', 'etcdctl', 'openssl'))(
  'https endpoints with a CA and a client certificate: lock, wait, fencing, watch; refused without the certificate or the CA',
  async () => {
    await using etcd = await startEtcd(1, { tls: true });
    const tls = etcd.tls!;
    const endpoints = etcd.endpoints;
    expect(endpoints[0]).toMatch(/^https:/);
    const a = await EtcdLocks.connect({ endpoints, prefix: '/tls/', tls: { ca: tls.ca, cert: tls.cert, key: tls.key } });
    const b = await EtcdLocks.connect({
      endpoints,
      prefix: '/tls/',
      tls: { ca: Buffer.from(tls.ca), cert: tls.cert, key: tls.key },
    });
    try {
      const first = await a.lock('t');
      const waiting = b.lock('t', { timeout: 10_000 }); // woken by the session watch over TLS
      while ((await a.list('t'))[0]?.waiting !== 1) await new Promise((r) => setTimeout(r, 20));
      await first.release();
      const second = await waiting;
      expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
      await second.release();

      // A client without a certificate, or without our CA, gets no further than the handshake.
      const noCert = await rejectionOf(EtcdLocks.connect({ endpoints, prefix: '/tls/', tls: { ca: tls.ca } }));
      expect(isLockError(noCert, 'EUNAVAILABLE'), String(noCert)).toBe(true);
      const noCa = await rejectionOf(EtcdLocks.connect({ endpoints, prefix: '/tls/', tls: { cert: tls.cert, key: tls.key } }));
      expect(isLockError(noCa, 'EUNAVAILABLE'), String(noCa)).toBe(true);
      expect(String((noCa as Error).message)).toMatch(/certificate/i);
      expect(await etcd.etcdctl('get', '--prefix', '--keys-only', '/tls/')).toBe('');
    } finally {
      await a.close();
      await b.close();
    }
    // Bad TLS options are TypeErrors naming them.
    await expect(EtcdLocks.connect({ endpoints, tls: { cert: tls.cert } })).rejects.toThrow(/`tls`/);
    await expect(EtcdLocks.connect({ endpoints, tls: { ca: 42 } as never })).rejects.toThrow(/`tls.ca`/);
    await expect(EtcdLocks.connect({ endpoints, tls: { bogus: 1 } as never })).rejects.toThrow(/tls.bogus/);
    await expect(EtcdLocks.connect({ endpoints: 'http://127.0.0.1:1', tls: { ca: tls.ca } })).rejects.toThrow(/`endpoints`/);
    await expect(EtcdLocks.connect({ endpoints: ['http://127.0.0.1:1', endpoints[0]!] })).rejects.toThrow(/`endpoints`/);
  },
);
