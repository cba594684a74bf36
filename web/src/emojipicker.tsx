// The reaction picker: a search field and a grid of emoji, all by keyboard. Focus goes
// into the search field when it opens and back to the button that opened it when it
// closes (a pick, Esc, or a click elsewhere).
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { QUICK, searchEmoji } from './emoji';

const COLUMNS = 8;

export function EmojiPicker({
  anchor,
  onPick,
  onClose,
}: {
  /** The button that opened it: focus returns there. */
  anchor: HTMLElement;
  onPick: (emoji: string) => void;
  onClose: () => void;
}) {
  const [query, setQuery] = useState('');
  const box = useRef<HTMLDivElement>(null);
  const search = useRef<HTMLInputElement>(null);
  const [pos, setPos] = useState<{ top: number; left: number } | undefined>();
  const found = searchEmoji(query, 64);
  const quick = query ? [] : QUICK;
  const all = [...quick, ...found.map((e) => e.e).filter((e) => !quick.includes(e))];

  const done = (emoji?: string) => {
    anchor.focus();
    if (emoji) onPick(emoji);
    onClose();
  };

  // Once placed (it is hidden until then, and a hidden field takes no focus).
  useEffect(() => {
    if (pos) search.current?.focus();
  }, [pos !== undefined]);

  useEffect(() => {
    const away = (e: MouseEvent) => {
      if (!box.current?.contains(e.target as Node) && e.target !== anchor) onClose();
    };
    // Esc closes it wherever the focus is: also in the frame between opening and its
    // search field taking the focus (the picker's own handler sees only keys inside).
    const escape = (e: KeyboardEvent) => {
      if (e.key === 'Escape' && !box.current?.contains(e.target as Node)) {
        e.preventDefault();
        done();
      }
    };
    document.addEventListener('mousedown', away);
    document.addEventListener('keydown', escape);
    return () => {
      document.removeEventListener('mousedown', away);
      document.removeEventListener('keydown', escape);
    };
  }, []);

  // Below the button, or above it when there is no room below; inside the window.
  useLayoutEffect(() => {
    const el = box.current;
    if (!el) return;
    const a = anchor.getBoundingClientRect();
    const h = el.offsetHeight;
    const w = el.offsetWidth;
    const top = a.bottom + 4 + h > window.innerHeight ? Math.max(4, a.top - h - 4) : a.bottom + 4;
    const left = Math.min(Math.max(4, a.right - w), window.innerWidth - w - 4);
    setPos({ top, left });
  }, [anchor]);

  const cells = () => [...(box.current?.querySelectorAll<HTMLButtonElement>('.emoji-cell') ?? [])];
  const move = (from: number, by: number) => {
    const list = cells();
    const to = from + by;
    if (to < 0) return search.current?.focus();
    list[Math.min(to, list.length - 1)]?.focus();
  };

  return (
    <div
      class="emoji-picker"
      role="dialog"
      aria-label="Pick a reaction"
      ref={box}
      style={pos ? { top: `${pos.top}px`, left: `${pos.left}px` } : { visibility: 'hidden' }}
      onKeyDown={(e) => {
        if (e.key === 'Escape') {
          e.preventDefault();
          e.stopPropagation();
          done();
        } else if (e.key === 'Tab') {
          // The picker is a single stop: Tab leaves it, as Esc does.
          e.preventDefault();
          done();
        }
      }}
    >
      <input
        ref={search}
        type="search"
        class="emoji-search"
        aria-label="Search emoji"
        placeholder="Search emoji"
        value={query}
        onInput={(e) => setQuery(e.currentTarget.value)}
        onKeyDown={(e) => {
          if (e.key === 'Enter') {
            e.preventDefault();
            const first = all[0];
            if (first) done(first);
          } else if (e.key === 'ArrowDown') {
            e.preventDefault();
            move(-1, 1);
          }
        }}
      />
      <div class="emoji-grid" role="group" aria-label={query ? `Emoji matching ${query}` : 'Emoji'}>
        {all.map((emoji, i) => {
          const meta = found.find((f) => f.e === emoji);
          const name = meta?.codes[0] ?? emoji;
          return (
            <button
              key={emoji}
              type="button"
              class="emoji-cell"
              tabIndex={-1}
              aria-label={`React with ${emoji}`}
              title={`:${name}:`}
              onClick={() => done(emoji)}
              onKeyDown={(e) => {
                const by = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: COLUMNS, ArrowUp: -COLUMNS }[e.key];
                if (by !== undefined) {
                  e.preventDefault();
                  move(i, by);
                }
              }}
            >
              {emoji}
            </button>
          );
        })}
        {all.length === 0 && <p class="muted">No emoji match “{query}”.</p>}
      </div>
    </div>
  );
}
