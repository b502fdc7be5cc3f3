// Parley's amqplib checks: publish, consume, confirms, topic routing. The URL comes from
// PARLEY_AMQP_URL and queue names start with PARLEY_TEST_PREFIX (both set by node_test.go).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import amqp from 'amqplib';

const url = process.env.PARLEY_AMQP_URL;
const prefix = process.env.PARLEY_TEST_PREFIX || `it-node-${process.pid}`;
if (!url) throw new Error('PARLEY_AMQP_URL is not set');

const TIMEOUT = 10000;
const conns = [];
after(async () => { for (const c of conns) { try { await c.close(); } catch { /* already closed */ } } });

async function connect() {
  const c = await amqp.connect(url);
  conns.push(c);
  return c;
}

// nextMessages resolves with n messages from q (manual ack), failing after TIMEOUT.
function nextMessages(ch, q, n, { ack = true } = {}) {
  return new Promise((resolve, reject) => {
    const got = [];
    const timer = setTimeout(() => reject(new Error(`only ${got.length} of ${n} messages from ${q}`)), TIMEOUT);
    ch.consume(q, (m) => {
      if (m === null) return; // server-sent basic.cancel (the queue was deleted in cleanup)
      got.push(m);
      if (ack) ch.ack(m);
      if (got.length === n) { clearTimeout(timer); resolve(got); }
    }).catch(reject);
  });
}

test('publish and consume with properties', { timeout: 2 * TIMEOUT }, async () => {
  const c = await connect();
  const ch = await c.createChannel();
  const q = `${prefix}-pc`;
  await ch.assertQueue(q, { durable: false, autoDelete: false });
  try {
    for (let i = 0; i < 5; i++) {
      ch.sendToQueue(q, Buffer.from(`m${i}`), {
        contentType: 'text/plain', correlationId: `c${i}`, headers: { n: i, s: 'v' }, persistent: true,
      });
    }
    await ch.prefetch(2);
    const ms = await nextMessages(ch, q, 5);
    assert.deepEqual(ms.map((m) => m.content.toString()), ['m0', 'm1', 'm2', 'm3', 'm4']);
    assert.deepEqual(ms.map((m) => m.fields.deliveryTag), [1, 2, 3, 4, 5]);
    assert.equal(ms[3].properties.correlationId, 'c3');
    assert.equal(ms[3].properties.contentType, 'text/plain');
    assert.equal(ms[3].properties.deliveryMode, 2);
    assert.deepEqual(ms[3].properties.headers, { n: 3, s: 'v' });
    assert.equal(ms[0].fields.redelivered, false);
  } finally {
    await ch.deleteQueue(q);
    await ch.close();
  }
});

test('publisher confirms', { timeout: 2 * TIMEOUT }, async () => {
  const c = await connect();
  const ch = await c.createConfirmChannel();
  const q = `${prefix}-confirm`;
  await ch.assertQueue(q, { durable: true, autoDelete: false });
  try {
    const acks = [];
    for (let i = 0; i < 50; i++) {
      acks.push(new Promise((resolve, reject) => {
        ch.sendToQueue(q, Buffer.from(String(i)), { persistent: true }, (err) => (err ? reject(err) : resolve()));
      }));
    }
    await Promise.all(acks);
    await ch.waitForConfirms();
    const st = await ch.checkQueue(q);
    assert.equal(st.messageCount, 50);
    // A full reject-publish queue nacks.
    const full = `${prefix}-full`;
    await ch.assertQueue(full, { durable: false, arguments: { 'x-max-length': 1, 'x-overflow': 'reject-publish' } });
    try {
      await new Promise((resolve, reject) => ch.sendToQueue(full, Buffer.from('1'), {}, (e) => (e ? reject(e) : resolve())));
      await assert.rejects(new Promise((resolve, reject) => ch.sendToQueue(full, Buffer.from('2'), {}, (e) => (e ? reject(e) : resolve()))));
    } finally {
      await ch.deleteQueue(full);
    }
  } finally {
    await ch.deleteQueue(q);
    await ch.close();
  }
});

test('topic routing', { timeout: 2 * TIMEOUT }, async () => {
  const c = await connect();
  const ch = await c.createChannel();
  const x = `${prefix}-topic`;
  await ch.assertExchange(x, 'topic', { durable: false });
  const cases = { star: 'stock.*.nyse', hash: 'stock.#', exact: 'stock.ibm.nyse' };
  const queues = {};
  try {
    for (const [name, pattern] of Object.entries(cases)) {
      queues[name] = `${prefix}-${name}`;
      await ch.assertQueue(queues[name], { durable: false });
      await ch.bindQueue(queues[name], x, pattern);
    }
    for (const key of ['stock.ibm.nyse', 'stock.msft.nasdaq', 'stock', 'bond.ibm.nyse', 'stock.a.b.nyse']) {
      ch.publish(x, key, Buffer.from(key));
    }
    const want = {
      star: ['stock.ibm.nyse'],
      hash: ['stock.ibm.nyse', 'stock.msft.nasdaq', 'stock', 'stock.a.b.nyse'],
      exact: ['stock.ibm.nyse'],
    };
    for (const [name, keys] of Object.entries(want)) {
      const ms = await nextMessages(ch, queues[name], keys.length);
      assert.deepEqual(ms.map((m) => m.content.toString()), keys, name);
      assert.deepEqual(ms.map((m) => m.fields.routingKey), keys, name);
    }
    // Nothing more arrives at the exact queue.
    await new Promise((r) => setTimeout(r, 300));
    const st = await ch.checkQueue(queues.exact);
    assert.equal(st.messageCount, 0);
  } finally {
    for (const q of Object.values(queues)) await ch.deleteQueue(q);
    await ch.deleteExchange(x);
    await ch.close();
  }
});

test('channel error: 404 on a missing queue', { timeout: 2 * TIMEOUT }, async () => {
  const c = await connect();
  const ch = await c.createChannel();
  ch.on('error', () => {});
  await assert.rejects(ch.checkQueue(`${prefix}-missing`), (err) => {
    assert.equal(err.code, 404);
    assert.match(err.message, new RegExp(`NOT_FOUND - no queue '${prefix}-missing' in vhost '/'`));
    return true;
  });
});
