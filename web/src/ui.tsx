// What the chat's components share: the store, which dialog is open, and the pieces
// every view uses (a modal dialog that keeps the keyboard, presence dots, agent tags).
import { createContext, type ComponentChildren } from 'preact';
import { useContext, useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import type { ChannelId, Message } from '@chorus/client';
import type { ChatStore } from './store';

export type DialogState =
  | { kind: 'dm' }
  | { kind: 'workspace' }
  | { kind: 'channel' }
  | { kind: 'invite' }
  | { kind: 'members' }
  | { kind: 'channel-details'; channelId: ChannelId }
  | { kind: 'pins'; channelId: ChannelId }
  | { kind: 'switcher' }
  | { kind: 'status' }
  | { kind: 'delete'; message: Message };

export interface Ui {
  store: ChatStore;
  open: (d: DialogState) => void;
  close: () => void;
}

export const UiContext = createContext<Ui | undefined>(undefined);

export function useUi(): Ui {
  const ui = useContext(UiContext);
  if (!ui) throw new Error('no UiContext');
  return ui;
}

/** Re-renders the caller whenever the store changes. */
export function useStore(store: ChatStore): void {
  const [, bump] = useState(0);
  useEffect(() => store.subscribe(() => bump((n) => n + 1)), [store]);
}

const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

/** A modal dialog: focus moves in (to `[data-autofocus]` or the first field), Tab stays
 * inside, Esc and the backdrop close it, and focus goes back where it came from. */
export function Dialog({
  title,
  onClose,
  children,
  wide,
  id,
}: {
  title: string;
  onClose: () => void;
  children: ComponentChildren;
  wide?: boolean;
  id: string;
}) {
  const box = useRef<HTMLDivElement>(null);
  // Before the next paint (and the next key press): what is typed right after the
  // shortcut lands in the dialog.
  useLayoutEffect(() => {
    const opener = document.activeElement as HTMLElement | null;
    const el = box.current;
    // Its first field (not the close button), unless one asks for the focus.
    const first =
      el?.querySelector<HTMLElement>('[data-autofocus]') ??
      [...(el?.querySelectorAll<HTMLElement>(FOCUSABLE) ?? [])].find((x) => !x.classList.contains('dialog-close'));
    (first ?? el)?.focus();
    return () => {
      // Back where it came from, when that is still on the page (else the message box).
      if (opener && document.contains(opener)) opener.focus();
      else document.getElementById('composer-input')?.focus();
    };
  }, []);
  return (
    <div class="backdrop" onClick={(e) => e.target === e.currentTarget && onClose()}>
      <div
        class={`dialog${wide ? ' wide' : ''}`}
        role="dialog"
        aria-modal="true"
        aria-labelledby={`${id}-title`}
        ref={box}
        tabIndex={-1}
        onKeyDown={(e) => {
          if (e.key === 'Escape') {
            e.stopPropagation();
            onClose();
          } else if (e.key === 'Tab') {
            const items = [...(box.current?.querySelectorAll<HTMLElement>(FOCUSABLE) ?? [])].filter((x) => x.offsetParent !== null);
            const first = items[0];
            const last = items.at(-1);
            if (!first || !last) return;
            if (e.shiftKey && document.activeElement === first) {
              e.preventDefault();
              last.focus();
            } else if (!e.shiftKey && document.activeElement === last) {
              e.preventDefault();
              first.focus();
            }
          }
        }}
      >
        <div class="dialog-head">
          <h2 id={`${id}-title`}>{title}</h2>
          <button class="icon dialog-close" aria-label="Close" title="Close (Esc)" onClick={onClose}>
            ×
          </button>
        </div>
        {children}
      </div>
    </div>
  );
}

export function Dot({ online }: { online: boolean }) {
  return (
    <span
      class={`dot ${online ? 'online' : 'offline'}`}
      role="img"
      aria-label={online ? 'online' : 'offline'}
      data-presence={online ? 'online' : 'offline'}
    />
  );
}

export function AgentTag() {
  return (
    <span class="tag agent" title="An AI agent">
      agent
    </span>
  );
}

/** "Today", "Yesterday", or the date. */
export function dayLabel(d: Date, now = new Date()): string {
  const day = (x: Date) => new Date(x.getFullYear(), x.getMonth(), x.getDate()).getTime();
  const diff = Math.round((day(now) - day(d)) / 86_400_000);
  if (diff === 0) return 'Today';
  if (diff === 1) return 'Yesterday';
  return d.toLocaleDateString([], {
    weekday: 'long',
    month: 'long',
    day: 'numeric',
    ...(d.getFullYear() !== now.getFullYear() && { year: 'numeric' }),
  });
}
