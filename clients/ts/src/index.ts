// @chorus/client: a typed HTTP client and a resuming realtime connection for Chorus.
export * from './protocol.js';
export * from './model.js';
export { ChorusError } from './errors.js';
export { StreamWriter, type StreamOptions, type StreamSink } from './stream.js';
export { ChorusHttp, ROUTES, newIdempotencyKey, type HttpOptions, type SendOptions, type Sent, type Opened } from './http.js';
export {
  ChorusRealtime,
  isEvent,
  RESUME_GAP,
  wsUrl,
  type ChorusEvent,
  type ConnectionState,
  type GapData,
  type RealtimeListeners,
  type RealtimeOptions,
  type TypedEvent,
  type WebSocketConstructor,
  type WebSocketLike,
} from './realtime.js';
export {
  defineTopic,
  type SchemaData,
  type Topic,
  type TopicArgs,
  type TopicEvent,
  type TopicParamNames,
  type TopicParams,
  type TopicSubscription,
} from './topics.js';
