// Fault injection for the tests, at the transport: the client under test gets this
// WebSocket class and cannot tell it from a real network's. No test hook in the client.
import { WebSocket } from 'ws';

/** A `ws` WebSocket whose connections the test can refuse (`gate.open = false`, to hold
 * a client in its reconnect backoff) and `cut()`: each open connection's TCP socket is
 * destroyed without a close frame, as a network failure would (the client sees 1006). */
export function faultyWebSocket() {
  /** `refused`: attempts made while closed (a test waits for one instead of sleeping). */
  const gate = { open: true, refused: 0 };
  const open = new Set<WebSocket>();
  class FaultyWebSocket extends WebSocket {
    constructor(url: string) {
      // Port 9 (discard) is closed on loopback: the attempt fails at once with 1006.
      super(gate.open ? url : 'ws://127.0.0.1:9/ws');
      if (!gate.open) gate.refused += 1;
      this.once('open', () => open.add(this));
      this.once('close', () => open.delete(this));
    }
  }
  const cut = () => {
    for (const ws of open) ws.terminate();
  };
  return { gate, FaultyWebSocket, cut };
}
