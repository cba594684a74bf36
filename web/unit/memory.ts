// An in-memory stand-in for the browser's localStorage, for the unit tests.
import type { KeyValue } from '../src/persist.js';

export class Memory implements KeyValue {
  data = new Map<string, string>();
  getItem(k: string) {
    return this.data.get(k) ?? null;
  }
  setItem(k: string, v: string) {
    this.data.set(k, v);
  }
  removeItem(k: string) {
    this.data.delete(k);
  }
}
