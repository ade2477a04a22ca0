/**
 * A waiter's turn (packages/etcd/src/wait.ts) when the session's watch
 * reports two gaps in a row and their re-reads answer out of order: only
 * the answer of the latest re-read applies. Driven directly, with the
 * answers in the order a slow first read would give them (a real etcd
 * cannot be made to answer two reads out of order on demand).
 */
import { expect, test } from 'vitest';
import type { KeyValue } from '../packages/etcd/src/gateway.js';
import { Turn } from '../packages/etcd/src/wait.js';

const kv = (key: string, createRevision: bigint): KeyValue => ({
  key,
  value: '',
  createRevision,
  modRevision: createRevision,
  lease: 0n,
});
const a = kv('/p/n/a', 1n);
const b = kv('/p/n/b', 2n);
const mine = kv('/p/n/c', 3n);

/** Our turn waiting behind a and b, and a signal to end the wait with when the turn did not come. */
function queued(): { turn: Turn; waiting: Promise<void>; stop: AbortController } {
  const turn = new Turn(mine.key);
  turn.sync([a, b, mine], 3n, 3n);
  const stop = new AbortController();
  return { turn, waiting: turn.wait(stop.signal), stop };
}

test('an older re-read answering after a newer one is dropped (it would bring back a deleted key)', async () => {
  const { turn, waiting, stop } = queued();
  const first = turn.unsync();
  const second = turn.unsync();
  // a went at 5, unheard (compacted away); the second read sees it gone.
  turn.resync(second, { kvs: [b, mine], revision: 10n });
  // The first read, served earlier, lands last: a is still in its snapshot.
  turn.resync(first, { kvs: [a, b, mine], revision: 8n });
  turn.deleted({ key: b.key, revision: 12n });
  stop.abort(new Error('the turn did not come'));
  await expect(waiting).resolves.toBeUndefined();
});

test('deletions heard until the latest re-read answers apply to its answer, even when an older read answered first', async () => {
  const { turn, waiting, stop } = queued();
  const first = turn.unsync();
  const second = turn.unsync();
  // The first read answers first; applying it would end the holding of
  // what we hear, and the second answer would then bring b back.
  turn.resync(first, { kvs: [a, b, mine], revision: 15n });
  turn.deleted({ key: b.key, revision: 22n }); // after the second read was served
  turn.resync(second, { kvs: [a, b, mine], revision: 20n });
  turn.deleted({ key: a.key, revision: 25n });
  stop.abort(new Error('the turn did not come'));
  await expect(waiting).resolves.toBeUndefined();
});

test('a failed older re-read does not fail the wait; a failed latest one does', async () => {
  const { turn, waiting, stop } = queued();
  const first = turn.unsync();
  const second = turn.unsync();
  turn.resync(first, new Error('old read failed'));
  turn.resync(second, new Error('latest read failed'));
  stop.abort(new Error('still waiting'));
  await expect(waiting).rejects.toThrow('latest read failed');
});
