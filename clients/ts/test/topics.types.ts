// Compile test of typed topics: `npm test` type-checks this file (tsconfig.test.json)
// before running anything, and every `@ts-expect-error` line below MUST be an error —
// if the payload types stopped following the schemas (say `FromSchema` became
// `unknown`), the directive would be unused and the build fails. Nothing here runs.
import { defineTopic, type ChorusRealtime, type TopicEvent } from '../src/index.js';
import { cursors, news, notifications, orders } from './generated/gateway.js';

declare const rt: ChorusRealtime;

export async function typedTopics(): Promise<void> {
  // Payloads that fit the schema (docs/gateway.example.toml's `orders` and `cursors`).
  await orders.publish(rt, { order_id: 42 }, 'order.updated', { status: 'paid', amount: 12.5 });
  await cursors.publish(rt, { doc: 'readme' }, 'cursor', { x: 1, y: 2 });

  // @ts-expect-error: `amount` must be a number
  await orders.publish(rt, { order_id: 42 }, 'order.updated', { status: 'paid', amount: '12.5' });
  // @ts-expect-error: `status` is one of paid, shipped, cancelled
  await orders.publish(rt, { order_id: 42 }, 'order.updated', { status: 'lost', amount: 1 });
  // @ts-expect-error: `amount` is required
  await orders.publish(rt, { order_id: 42 }, 'order.updated', { status: 'paid' });
  // @ts-expect-error: `additionalProperties = false` in cursors
  await cursors.publish(rt, { doc: 'readme' }, 'cursor', { x: 1, y: 2, z: 3 });
  // @ts-expect-error: the pattern's parameter is `order_id`
  await orders.publish(rt, { id: 42 }, 'order.updated', { status: 'paid', amount: 1 });
  // @ts-expect-error: a topic with a parameter needs its value
  orders.scope();
  // @ts-expect-error: `news` has no parameter
  news.scope({ id: 1 });

  const scope: string = notifications.scope({ user_id: 7 });
  void scope;

  // Subscribed events are typed from the schema.
  await orders.subscribe(rt, { order_id: 42 }, (event) => {
    const amount: number = event.data.amount;
    const status: 'paid' | 'shipped' | 'cancelled' = event.data.status;
    // @ts-expect-error: no such property in the schema's required ones
    const missing: number = event.data.total;
    void [amount, status, missing];
  });
  rt.on('event', (event) => {
    if (cursors.is(event)) {
      const x: number = event.data.x;
      // @ts-expect-error: `x` is a number, not a string
      const wrong: string = event.data.x;
      void [x, wrong];
    }
  });

  // A schema given inline keeps its literal types without `as const`.
  const votes = defineTopic('polls.{poll_id}.votes', {
    type: 'object',
    properties: { choice: { type: 'integer' } },
    required: ['choice'],
    additionalProperties: false,
  });
  await votes.publish(rt, { poll_id: 'p1' }, 'vote', { choice: 2 });
  // @ts-expect-error: `choice` is an integer
  await votes.publish(rt, { poll_id: 'p1' }, 'vote', { choice: 'two' });
  const handler = (event: TopicEvent<{ choice: number }>): number => event.data.choice;
  await votes.subscribe(rt, { poll_id: 'p1' }, handler);

  // Without a schema the payload is `unknown` unless a type is given.
  const untyped = defineTopic('free.{id}');
  await untyped.publish(rt, { id: 1 }, 'anything', { whatever: true });
  const typed = defineTopic<'pings', { n: number }>('pings');
  await typed.publish(rt, 'ping', { n: 1 });
  // @ts-expect-error: the given type says `n` is a number
  await typed.publish(rt, 'ping', { n: 'one' });
}
