// Emoji by `:shortcode:` (the common GitHub/Slack names) and for the reaction picker:
// each with its names and a few words to search by. Pure: unit-tested in Node.

export interface Emoji {
  /** The character(s). */
  e: string;
  /** Shortcodes, the first the main one. */
  codes: string[];
  /** More words the search finds it by. */
  words?: string;
}

export const EMOJI: Emoji[] = [
  { e: '👍', codes: ['thumbsup', '+1', 'like'], words: 'yes agree ok approve' },
  { e: '👎', codes: ['thumbsdown', '-1'], words: 'no disagree' },
  { e: '❤️', codes: ['heart'], words: 'love red' },
  { e: '😄', codes: ['smile'], words: 'happy joy laugh' },
  { e: '🎉', codes: ['tada', 'party'], words: 'celebrate hooray congratulations' },
  { e: '👀', codes: ['eyes'], words: 'look watching seen' },
  { e: '🚀', codes: ['rocket'], words: 'ship launch fast' },
  { e: '✅', codes: ['white_check_mark', 'check'], words: 'done yes ok' },
  { e: '❌', codes: ['x'], words: 'no wrong cross' },
  { e: '🙏', codes: ['pray', 'thanks'], words: 'please thank you' },
  { e: '😂', codes: ['joy'], words: 'laugh tears funny lol' },
  { e: '🤣', codes: ['rofl'], words: 'laugh rolling funny' },
  { e: '😊', codes: ['blush'], words: 'smile happy' },
  { e: '🙂', codes: ['slightly_smiling_face'], words: 'smile' },
  { e: '😉', codes: ['wink'] },
  { e: '😍', codes: ['heart_eyes'], words: 'love' },
  { e: '😎', codes: ['sunglasses', 'cool'] },
  { e: '🤔', codes: ['thinking'], words: 'hmm think' },
  { e: '😅', codes: ['sweat_smile'], words: 'phew nervous' },
  { e: '😬', codes: ['grimacing'], words: 'awkward oops' },
  { e: '😢', codes: ['cry'], words: 'sad tear' },
  { e: '😭', codes: ['sob'], words: 'cry sad' },
  { e: '😡', codes: ['rage', 'angry'], words: 'mad' },
  { e: '😱', codes: ['scream'], words: 'shock fear' },
  { e: '😴', codes: ['sleeping'], words: 'tired sleep zzz' },
  { e: '🙄', codes: ['roll_eyes'] },
  { e: '😇', codes: ['innocent'], words: 'angel halo' },
  { e: '🤯', codes: ['exploding_head', 'mind_blown'] },
  { e: '🥳', codes: ['partying_face'], words: 'party celebrate birthday' },
  { e: '🤗', codes: ['hugs'], words: 'hug' },
  { e: '🤝', codes: ['handshake'], words: 'deal agree' },
  { e: '👏', codes: ['clap'], words: 'applause bravo' },
  { e: '🙌', codes: ['raised_hands'], words: 'hooray celebrate' },
  { e: '👋', codes: ['wave'], words: 'hello hi bye' },
  { e: '💪', codes: ['muscle'], words: 'strong' },
  { e: '👌', codes: ['ok_hand'], words: 'ok perfect' },
  { e: '✌️', codes: ['v'], words: 'peace victory' },
  { e: '🤞', codes: ['crossed_fingers'], words: 'luck hope' },
  { e: '👉', codes: ['point_right'] },
  { e: '👈', codes: ['point_left'] },
  { e: '👆', codes: ['point_up_2'] },
  { e: '👇', codes: ['point_down'] },
  { e: '🔥', codes: ['fire'], words: 'hot lit' },
  { e: '✨', codes: ['sparkles'], words: 'shiny new magic' },
  { e: '⭐', codes: ['star'] },
  { e: '🌟', codes: ['star2'], words: 'glowing star' },
  { e: '💯', codes: ['100'], words: 'perfect hundred' },
  { e: '💡', codes: ['bulb', 'idea'], words: 'light' },
  { e: '⚠️', codes: ['warning'], words: 'caution alert' },
  { e: '🚨', codes: ['rotating_light'], words: 'alarm alert incident' },
  { e: '🐛', codes: ['bug'], words: 'insect defect' },
  { e: '🔧', codes: ['wrench'], words: 'fix tool' },
  { e: '🛠️', codes: ['hammer_and_wrench'], words: 'tools build' },
  { e: '⚙️', codes: ['gear'], words: 'settings' },
  { e: '📌', codes: ['pushpin', 'pin'] },
  { e: '📎', codes: ['paperclip'] },
  { e: '📝', codes: ['memo', 'pencil'], words: 'note write' },
  { e: '📅', codes: ['date', 'calendar'] },
  { e: '⏰', codes: ['alarm_clock'], words: 'time' },
  { e: '⏳', codes: ['hourglass_flowing_sand', 'hourglass'], words: 'wait' },
  { e: '📈', codes: ['chart_with_upwards_trend'], words: 'graph up growth' },
  { e: '📉', codes: ['chart_with_downwards_trend'], words: 'graph down' },
  { e: '📦', codes: ['package'], words: 'box release' },
  { e: '🔒', codes: ['lock'], words: 'private secure' },
  { e: '🔑', codes: ['key'] },
  { e: '💬', codes: ['speech_balloon'], words: 'chat comment' },
  { e: '📣', codes: ['mega'], words: 'announce' },
  { e: '🔔', codes: ['bell'], words: 'notification' },
  { e: '💻', codes: ['computer', 'laptop'] },
  { e: '🖥️', codes: ['desktop_computer'] },
  { e: '📱', codes: ['iphone', 'phone'] },
  { e: '☕', codes: ['coffee'], words: 'break' },
  { e: '🍕', codes: ['pizza'], words: 'food lunch' },
  { e: '🍺', codes: ['beer'], words: 'drink' },
  { e: '🍰', codes: ['cake'], words: 'birthday' },
  { e: '🎂', codes: ['birthday'], words: 'cake' },
  { e: '🎁', codes: ['gift'], words: 'present' },
  { e: '🏆', codes: ['trophy'], words: 'win award' },
  { e: '🥇', codes: ['1st_place_medal'], words: 'gold first' },
  { e: '🎯', codes: ['dart'], words: 'target goal' },
  { e: '🧠', codes: ['brain'], words: 'smart think' },
  { e: '🤖', codes: ['robot'], words: 'bot agent' },
  { e: '👻', codes: ['ghost'] },
  { e: '💀', codes: ['skull'] },
  { e: '💩', codes: ['poop', 'hankey'] },
  { e: '🙈', codes: ['see_no_evil'], words: 'monkey oops' },
  { e: '🐶', codes: ['dog'] },
  { e: '🐱', codes: ['cat'] },
  { e: '🦄', codes: ['unicorn'] },
  { e: '🌈', codes: ['rainbow'] },
  { e: '☀️', codes: ['sunny', 'sun'] },
  { e: '🌧️', codes: ['cloud_with_rain', 'rain'] },
  { e: '❄️', codes: ['snowflake'], words: 'cold winter' },
  { e: '🌍', codes: ['earth_africa', 'globe'], words: 'world' },
  { e: '⚡', codes: ['zap'], words: 'lightning fast' },
  { e: '💥', codes: ['boom'], words: 'collision explode' },
  { e: '💤', codes: ['zzz'], words: 'sleep' },
  { e: '❓', codes: ['question'] },
  { e: '❗', codes: ['exclamation'] },
  { e: '➕', codes: ['heavy_plus_sign', 'plus'] },
  { e: '➖', codes: ['heavy_minus_sign', 'minus'] },
  { e: '🆗', codes: ['ok'] },
  { e: '🆕', codes: ['new'] },
  { e: '🔴', codes: ['red_circle'] },
  { e: '🟢', codes: ['green_circle'] },
  { e: '🟡', codes: ['yellow_circle'] },
  { e: '🔵', codes: ['large_blue_circle', 'blue_circle'] },
  { e: '💚', codes: ['green_heart'] },
  { e: '💙', codes: ['blue_heart'] },
  { e: '💜', codes: ['purple_heart'] },
  { e: '🧡', codes: ['orange_heart'] },
  { e: '💛', codes: ['yellow_heart'] },
  { e: '🖤', codes: ['black_heart'] },
  { e: '💔', codes: ['broken_heart'] },
  { e: '🫡', codes: ['saluting_face', 'salute'] },
  { e: '🫠', codes: ['melting_face'] },
  { e: '🥲', codes: ['smiling_face_with_tear'] },
  { e: '😐', codes: ['neutral_face'] },
  { e: '😮', codes: ['open_mouth'], words: 'wow surprise' },
  { e: '🤷', codes: ['shrug'], words: 'dunno whatever' },
  { e: '🤦', codes: ['facepalm'] },
  { e: '🏃', codes: ['runner', 'running'] },
  { e: '🚢', codes: ['ship'], words: 'ship it release' },
  { e: '🚧', codes: ['construction'], words: 'wip work in progress' },
  { e: '🧪', codes: ['test_tube'], words: 'test experiment' },
  { e: '📚', codes: ['books'], words: 'docs read' },
  { e: '🔗', codes: ['link'] },
  { e: '🗑️', codes: ['wastebasket', 'trash'], words: 'delete' },
  { e: '👤', codes: ['bust_in_silhouette'], words: 'user person' },
  { e: '👥', codes: ['busts_in_silhouette'], words: 'users people team' },
];

const BY_CODE = new Map<string, string>();
for (const emoji of EMOJI) for (const code of emoji.codes) BY_CODE.set(code, emoji.e);

/** The emoji of a shortcode (without its colons), or `undefined`. */
export function emojiByCode(code: string): string | undefined {
  return BY_CODE.get(code.toLowerCase());
}

/** The reactions offered first. */
export const QUICK = ['👍', '❤️', '😄', '🎉', '👀', '🚀'];

/** Emoji whose shortcode starts with `query` first, then those it appears in (a code or
 * a word); all of them for an empty query. */
export function searchEmoji(query: string, limit = EMOJI.length): Emoji[] {
  const q = query.trim().toLowerCase().replace(/^:|:$/g, '');
  if (!q) return EMOJI.slice(0, limit);
  const starts: Emoji[] = [];
  const contains: Emoji[] = [];
  for (const emoji of EMOJI) {
    if (emoji.codes.some((c) => c.startsWith(q))) starts.push(emoji);
    else if (emoji.codes.some((c) => c.includes(q)) || (emoji.words ?? '').split(' ').some((w) => w.startsWith(q))) {
      contains.push(emoji);
    }
  }
  return [...starts, ...contains].slice(0, limit);
}
