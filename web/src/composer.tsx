// The message box of a conversation: its draft (kept per conversation, across reloads),
// `@name`, `:emoji:` and `/command` completion, ↑ on an empty box to edit my last
// message, the reason a send did not go, and the answer to my last slash command.
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import type { ChannelId, MessageId } from '@chorus/client';
import { searchEmoji } from './emoji';
import { convKey } from './store';
import { useUi } from './ui';

interface Suggestion {
  /** What replaces the word being typed. */
  insert: string;
  label: string;
  detail?: string;
}

/** The built-in slash commands (docs/protocol.md, "Slash commands"). */
const BUILT_IN_COMMANDS: readonly { name: string; detail: string }[] = [
  { name: 'topic', detail: "<text> · set the channel's topic" },
  { name: 'invite', detail: '@name · add a member to the channel' },
  { name: 'leave', detail: 'leave the channel' },
  { name: 'me', detail: '<action> · post an action ("alice waves")' },
  { name: 'policy', detail: "<name> · set the channel's agent delivery policy" },
];

/** The word being completed: `/to` at the start of the box, `@bo` or `:ta` right
 * before the caret. */
function wordAt(text: string, caret: number): { kind: '/' | '@' | ':'; start: number; query: string } | undefined {
  const before = text.slice(0, caret);
  const command = /^\/([a-z0-9_-]*)$/.exec(before);
  if (command) return { kind: '/', start: 0, query: command[1]! };
  const mention = /(^|[^a-z0-9_.-])@([a-z0-9_.-]*)$/.exec(before);
  if (mention) return { kind: '@', start: caret - mention[2]!.length - 1, query: mention[2]! };
  const emoji = /(^|[\s(])[:]([a-z0-9_+-]{2,})$/.exec(before);
  if (emoji) return { kind: ':', start: caret - emoji[2]!.length - 1, query: emoji[2]! };
  return undefined;
}

export function Composer({
  channelId,
  threadId,
  label,
  id,
  autofocus,
}: {
  channelId: ChannelId;
  threadId?: MessageId;
  label: string;
  id: string;
  autofocus?: boolean;
}) {
  const { store } = useUi();
  const key = convKey(channelId, threadId);
  const [text, setText] = useState(() => store.draft(key));
  const [caret, setCaret] = useState(0);
  const [active, setActive] = useState(0);
  const [dismissed, setDismissed] = useState(false);
  const area = useRef<HTMLTextAreaElement>(null);
  const editing = store.editing?.key === key ? store.findMessage(store.editing.id) : undefined;
  const error = store.composerErrors.get(key);
  const answer = threadId === undefined ? store.commandAnswers.get(channelId) : undefined;
  const revision = store.draftRevision(key);

  // Another conversation, or the store put text back in this box (a refused send):
  // before the next paint, so the box never shows the reason without the text.
  useLayoutEffect(() => {
    setText(store.draft(key));
    setDismissed(false);
  }, [key, revision]);
  useEffect(() => {
    if (autofocus || window.matchMedia('(min-width: 721px)').matches) area.current?.focus();
  }, [key]);
  // Editing: the box holds the message's text until it is saved or given up.
  useLayoutEffect(() => {
    if (!editing) return;
    setText(editing.text);
    area.current?.focus();
  }, [editing?.id]);

  const word = dismissed ? undefined : wordAt(text, caret);
  const suggestions: Suggestion[] = !word
    ? []
    : word.kind === '/'
      ? [
          ...BUILT_IN_COMMANDS,
          ...store.commands.map((c) => ({ name: c.name, detail: c.description || 'registered command' })),
        ]
          .filter((c) => c.name.startsWith(word.query))
          .slice(0, 8)
          .map((c) => ({ insert: `/${c.name} `, label: `/${c.name}`, detail: c.detail }))
      : word.kind === '@'
      ? [...store.members.values()]
          .filter((m) => m.user.id !== store.me.id)
          .filter((m) => m.user.name.startsWith(word.query) || m.user.display_name.toLowerCase().startsWith(word.query))
          .sort((a, b) => a.user.name.localeCompare(b.user.name))
          .slice(0, 8)
          .map((m) => ({
            insert: `@${m.user.name} `,
            label: `@${m.user.name}`,
            detail: [m.user.display_name, m.user.kind === 'agent' ? 'agent' : ''].filter(Boolean).join(' · '),
          }))
      : searchEmoji(word.query, 8).map((e) => ({ insert: `${e.e} `, label: e.e, detail: `:${e.codes[0]}:` }));
  const open = suggestions.length > 0;
  const current = Math.min(active, suggestions.length - 1);

  const change = (value: string, at: number) => {
    setText(value);
    setCaret(at);
    setActive(0);
    setDismissed(false);
    if (!editing) store.setDraft(key, value);
    if (error) store.clearComposerError(key);
    if (answer) store.clearCommandAnswer(channelId);
  };

  const accept = (s: Suggestion) => {
    if (!word) return;
    const value = text.slice(0, word.start) + s.insert + text.slice(caret);
    const at = word.start + s.insert.length;
    // The box and its caret change now, not at the next frame: a key typed right after
    // the completion lands after it (a caret set later moved it back before that key).
    const el = area.current;
    if (el) {
      el.value = value;
      el.setSelectionRange(at, at);
    }
    change(value, at);
  };

  const submit = async () => {
    if (editing) {
      if (await store.editMessage(editing, text)) {
        store.stopEdit();
        setText(store.draft(key));
      }
      return;
    }
    if (!text.trim()) return;
    if (store.send(channelId, text, threadId)) setText('');
  };

  const listId = `${id}-suggestions`;
  return (
    <form
      class={`composer${editing ? ' editing' : ''}`}
      onSubmit={(e) => {
        e.preventDefault();
        void submit();
      }}
    >
      {editing && (
        <p class="composer-note" id={`${id}-note`}>
          Editing your message · <kbd>Enter</kbd> to save · <kbd>Esc</kbd> to cancel
        </p>
      )}
      {answer && (
        <p class={answer.ok ? 'composer-note' : 'composer-error'} role="status" id={`${id}-answer`} data-testid="command-answer">
          <strong>/{answer.command}</strong>: {answer.text}
          {!answer.ok && answer.code && ` (${answer.code})`} · only you can see this
        </p>
      )}
      {error && (
        <p class="composer-error" role="alert" id={`${id}-error`}>
          {error}
        </p>
      )}
      {open && (
        <ul class="suggestions" id={listId} role="listbox" aria-label={word?.kind === '@' ? 'People' : word?.kind === '/' ? 'Commands' : 'Emoji'}>
          {suggestions.map((s, i) => (
            <li
              key={s.label}
              id={`${listId}-${i}`}
              role="option"
              aria-selected={i === current}
              class={i === current ? 'active' : ''}
              onMouseDown={(e) => {
                e.preventDefault();
                accept(s);
              }}
            >
              <span class="suggestion-label">{s.label}</span>
              {s.detail && <span class="muted"> {s.detail}</span>}
            </li>
          ))}
        </ul>
      )}
      <div class="composer-row">
        <label for={id} class="sr-only">
          {editing ? 'Edit your message' : label}
        </label>
        <textarea
          id={id}
          ref={area}
          rows={1}
          placeholder={editing ? 'Edit your message' : label}
          value={text}
          role="combobox"
          aria-expanded={open}
          aria-autocomplete="list"
          aria-controls={open ? listId : undefined}
          aria-activedescendant={open ? `${listId}-${current}` : undefined}
          aria-describedby={[error && `${id}-error`, editing && `${id}-note`].filter(Boolean).join(' ') || undefined}
          onInput={(e) => {
            const el = e.currentTarget;
            change(el.value, el.selectionStart);
            if (el.value.trim() && !editing) store.typed(channelId, threadId);
          }}
          onKeyUp={(e) => {
            if (['ArrowLeft', 'ArrowRight', 'Home', 'End'].includes(e.key)) setCaret(e.currentTarget.selectionStart);
          }}
          onClick={(e) => setCaret(e.currentTarget.selectionStart)}
          onKeyDown={(e) => {
            if (open) {
              if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
                e.preventDefault();
                const n = suggestions.length;
                // From the latest state: keys pressed faster than renders all count.
                setActive((a) => (Math.min(a, n - 1) + (e.key === 'ArrowDown' ? 1 : n - 1)) % n);
                return;
              }
              // Enter on a word already complete (`@bob` typed in full) sends; Tab always completes.
              const complete =
                word && suggestions[current]!.insert.trim() === `${word.kind === ':' ? '' : word.kind}${word.query}`;
              if ((e.key === 'Tab' || (e.key === 'Enter' && !complete)) && !e.shiftKey) {
                e.preventDefault();
                accept(suggestions[current]!);
                return;
              }
              if (e.key === 'Escape') {
                e.preventDefault();
                e.stopPropagation();
                setDismissed(true);
                return;
              }
            }
            if (e.key === 'Escape' && editing) {
              e.preventDefault();
              e.stopPropagation();
              store.stopEdit();
              setText(store.draft(key));
              return;
            }
            if (e.key === 'ArrowUp' && !text && !editing && !e.shiftKey && !e.altKey && !e.metaKey && !e.ctrlKey) {
              const mine = store.lastOwnMessage(channelId, threadId);
              if (mine) {
                e.preventDefault();
                store.startEdit(key, mine.id);
              }
              return;
            }
            if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
              e.preventDefault();
              void submit();
            }
          }}
        />
        {editing && (
          <button
            type="button"
            class="link"
            onClick={() => {
              store.stopEdit();
              setText(store.draft(key));
            }}
          >
            Cancel
          </button>
        )}
        <button type="submit" disabled={!text.trim()}>
          {editing ? 'Save' : 'Send'}
        </button>
      </div>
    </form>
  );
}
