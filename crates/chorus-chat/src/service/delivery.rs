//! Agent-aware delivery (SPEC §4): whom a `message.created` wakes, who only observes it,
//! and who never receives it. A pure function of its inputs, with no I/O, so every row
//! of the policy table is tested here; `agents.rs` gathers the inputs and applies the
//! result as one [`Marks`] per message (a default plus exceptions), so the event's frame
//! is still rendered once per variant, never per recipient.

use std::collections::{BTreeMap, BTreeSet};

use chorus_realtime::{Mark, Marks};

use crate::model::{Policy, UserId};

/// What the decision depends on. Lists may be in any order and hold duplicates.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryInput<'a> {
    pub policy: Policy,
    pub author: UserId,
    /// The users the message mentions.
    pub mentions: &'a [UserId],
    /// The channel's on-duty list (`on_duty`).
    pub on_duty: &'a [UserId],
    /// The channel's wake list (`custom`).
    pub wake_list: &'a [UserId],
    /// The workspace's observers (`on_duty`).
    pub observers: &'a [UserId],
    /// The channel's agent members (`round_robin`).
    pub agents: &'a [UserId],
    /// The agent the channel woke last (`round_robin` turn state).
    pub last_woken: Option<UserId>,
}

/// The per-recipient marks of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The mark of every recipient not listed in `exceptions`.
    pub default: Mark,
    pub exceptions: BTreeMap<UserId, Mark>,
    /// `round_robin`: the agent this message wakes, which becomes the turn state.
    pub turn: Option<UserId>,
}

impl Decision {
    fn new(default: Mark) -> Self {
        Self {
            default,
            exceptions: BTreeMap::new(),
            turn: None,
        }
    }

    /// Sets `user`'s mark, keeping only the marks that differ from the default.
    fn set(&mut self, user: UserId, mark: Mark) {
        if mark == self.default {
            self.exceptions.remove(&user);
        } else {
            self.exceptions.insert(user, mark);
        }
    }

    pub fn mark_for(&self, user: UserId) -> Mark {
        self.exceptions.get(&user).copied().unwrap_or(self.default)
    }

    /// The loop guard held: none of `agents` is woken (they observe instead).
    pub(crate) fn quiet(&mut self, agents: &[UserId]) {
        for &agent in agents {
            if self.mark_for(agent) == Mark::Wake {
                self.set(agent, Mark::Observe);
            }
        }
        if self.turn.is_some_and(|t| agents.contains(&t)) {
            self.turn = None;
        }
    }

    /// The engine's form: what each recipient's frame looks like.
    pub fn marks(&self) -> Marks {
        Marks {
            default: self.default,
            users: self.exceptions.iter().map(|(u, m)| (u.0, *m)).collect(),
        }
    }
}

/// Decides every recipient's mark for one message (SPEC §4's table):
///
/// | policy | wake | observe | skip |
/// |---|---|---|---|
/// | `all` | everyone; only the mentioned if the message mentions someone | the rest | — |
/// | `mentions` | the mentioned | the rest | — |
/// | `broadcast` | — | everyone | — |
/// | `on_duty` | on-duty list + the mentioned | observers | everyone else |
/// | `custom` | the wake list | the rest | — |
/// | `round_robin` | one agent: a mentioned one, else the next after the last woken | the rest | — |
/// | `dm` | every participant | — | — |
///
/// The author is never woken by their own message and always receives it unwoken
/// (their other connections show what they sent), whatever the policy. A mention of the
/// author alone counts as no mention.
pub fn decide(input: &DeliveryInput<'_>) -> Decision {
    let author = input.author;
    let others = |list: &[UserId]| -> BTreeSet<UserId> {
        list.iter().copied().filter(|u| *u != author).collect()
    };
    let mentioned = others(input.mentions);
    let mut decision = match input.policy {
        Policy::All if mentioned.is_empty() => Decision::new(Mark::Wake),
        Policy::All | Policy::Mentions => wake_only(&mentioned, Mark::Observe),
        Policy::Broadcast => Decision::new(Mark::Observe),
        Policy::OnDuty => {
            let mut d = Decision::new(Mark::Skip);
            for &observer in input.observers {
                d.set(observer, Mark::Observe);
            }
            for user in others(input.on_duty).union(&mentioned) {
                d.set(*user, Mark::Wake);
            }
            d
        }
        Policy::Custom => wake_only(&others(input.wake_list), Mark::Observe),
        Policy::RoundRobin => {
            let agents = others(input.agents);
            let mentioned_agents: BTreeSet<UserId> =
                agents.intersection(&mentioned).copied().collect();
            let pool = if mentioned_agents.is_empty() {
                &agents
            } else {
                &mentioned_agents
            };
            let mut d = Decision::new(Mark::Observe);
            d.turn = next_in_rotation(pool, input.last_woken);
            if let Some(agent) = d.turn {
                d.set(agent, Mark::Wake);
            }
            d
        }
        Policy::Dm => Decision::new(Mark::Wake),
    };
    decision.set(author, Mark::Observe);
    decision
}

fn wake_only(users: &BTreeSet<UserId>, rest: Mark) -> Decision {
    let mut d = Decision::new(rest);
    for user in users {
        d.set(*user, Mark::Wake);
    }
    d
}

/// The first of `pool` (ordered by id) after `last`, wrapping around.
pub(crate) fn next_in_rotation(pool: &BTreeSet<UserId>, last: Option<UserId>) -> Option<UserId> {
    let after = last.and_then(|last| pool.range(UserId(last.0.saturating_add(1))..).next());
    after.or_else(|| pool.first()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Mark::{Observe, Skip, Wake};

    // A channel of: the author (a human), two humans, three agents, and an observer
    // who is not otherwise involved.
    const AUTHOR: UserId = UserId(1);
    const H1: UserId = UserId(2);
    const H2: UserId = UserId(3);
    const A1: UserId = UserId(10);
    const A2: UserId = UserId(11);
    const A3: UserId = UserId(12);
    const OBS: UserId = UserId(20);
    const EVERYONE: [UserId; 7] = [AUTHOR, H1, H2, A1, A2, A3, OBS];
    const AGENTS: [UserId; 3] = [A1, A2, A3];

    fn input(policy: Policy) -> DeliveryInput<'static> {
        DeliveryInput {
            policy,
            author: AUTHOR,
            mentions: &[],
            on_duty: &[],
            wake_list: &[],
            observers: &[],
            agents: &AGENTS,
            last_woken: None,
        }
    }

    /// Asserts the mark of every user of the channel: `wake` and `skip` list who gets
    /// those; everyone else must observe. A stranger (not in the channel, e.g. a public
    /// channel's non-member subscriber) gets `stranger`.
    #[track_caller]
    fn check(d: &Decision, wake: &[UserId], skip: &[UserId], stranger: Mark) {
        for user in EVERYONE {
            let expected = if wake.contains(&user) {
                Wake
            } else if skip.contains(&user) {
                Skip
            } else {
                Observe
            };
            assert_eq!(d.mark_for(user), expected, "user {user} in {d:?}");
        }
        assert_eq!(d.mark_for(UserId(999)), stranger, "stranger in {d:?}");
        // The engine's form says the same.
        let marks = d.marks();
        for user in EVERYONE.into_iter().chain([UserId(999)]) {
            assert_eq!(marks.mark_for(user.0), d.mark_for(user));
        }
    }

    #[test]
    fn all_wakes_everyone_but_the_author() {
        let d = decide(&input(Policy::All));
        check(&d, &[H1, H2, A1, A2, A3, OBS], &[], Wake);
        // Shared default: only the author is an exception.
        assert_eq!(d.exceptions.len(), 1);
        assert_eq!(d.turn, None);
    }

    #[test]
    fn all_with_mentions_wakes_only_the_mentioned() {
        let d = decide(&DeliveryInput {
            mentions: &[H2, A3],
            ..input(Policy::All)
        });
        check(&d, &[H2, A3], &[], Observe);
    }

    #[test]
    fn all_with_only_a_self_mention_wakes_everyone_else() {
        let d = decide(&DeliveryInput {
            mentions: &[AUTHOR],
            ..input(Policy::All)
        });
        check(&d, &[H1, H2, A1, A2, A3, OBS], &[], Wake);
    }

    #[test]
    fn mentions_wakes_the_mentioned_only() {
        check(&decide(&input(Policy::Mentions)), &[], &[], Observe);
        let d = decide(&DeliveryInput {
            mentions: &[A1, AUTHOR, A1],
            ..input(Policy::Mentions)
        });
        check(&d, &[A1], &[], Observe);
    }

    #[test]
    fn broadcast_wakes_nobody() {
        let d = decide(&DeliveryInput {
            mentions: &[A1, H1],
            ..input(Policy::Broadcast)
        });
        check(&d, &[], &[], Observe);
        assert!(d.exceptions.is_empty());
    }

    #[test]
    fn on_duty_wakes_the_list_and_the_mentioned_observers_observe_the_rest_skip() {
        let base = DeliveryInput {
            on_duty: &[A1],
            observers: &[OBS],
            ..input(Policy::OnDuty)
        };
        // Nothing mentioned: the on-duty agent wakes, the observer observes, the author
        // sees their own message, everyone else is skipped.
        check(&decide(&base), &[A1], &[H1, H2, A2, A3], Skip);
        // A mention wakes that member too, on duty or not.
        let d = decide(&DeliveryInput {
            mentions: &[H2],
            ..base
        });
        check(&d, &[A1, H2], &[H1, A2, A3], Skip);
        // An observer who is on duty or mentioned is woken.
        let d = decide(&DeliveryInput {
            on_duty: &[A1, OBS],
            ..base
        });
        check(&d, &[A1, OBS], &[H1, H2, A2, A3], Skip);
        // The author on duty is still not woken by their own message.
        let d = decide(&DeliveryInput { author: A1, ..base });
        assert_eq!(d.mark_for(A1), Observe);
        assert_eq!(d.mark_for(AUTHOR), Skip);
        // No list, no observers: only the author receives it.
        let d = decide(&input(Policy::OnDuty));
        check(&d, &[], &[H1, H2, A1, A2, A3, OBS], Skip);
    }

    #[test]
    fn custom_wakes_the_wake_list() {
        let d = decide(&DeliveryInput {
            wake_list: &[A2, H1, AUTHOR],
            mentions: &[A3],
            ..input(Policy::Custom)
        });
        check(&d, &[A2, H1], &[], Observe);
    }

    #[test]
    fn dm_wakes_every_participant_but_the_author() {
        let d = decide(&DeliveryInput {
            mentions: &[H1],
            ..input(Policy::Dm)
        });
        check(&d, &[H1, H2, A1, A2, A3, OBS], &[], Wake);
    }

    #[test]
    fn round_robin_rotates_through_agents_one_per_message() {
        let mut last = None;
        let mut woken = Vec::new();
        for _ in 0..7 {
            let d = decide(&DeliveryInput {
                last_woken: last,
                ..input(Policy::RoundRobin)
            });
            let turn = d.turn.expect("an agent is woken");
            check(&d, &[turn], &[], Observe);
            woken.push(turn);
            last = Some(turn);
        }
        assert_eq!(woken, [A1, A2, A3, A1, A2, A3, A1]);
    }

    #[test]
    fn round_robin_mention_overrides_the_rotation_and_the_rotation_continues_after_it() {
        let d = decide(&DeliveryInput {
            mentions: &[A3, H1],
            last_woken: Some(A1),
            ..input(Policy::RoundRobin)
        });
        // Only the mentioned agent; a mentioned human is not woken.
        check(&d, &[A3], &[], Observe);
        assert_eq!(d.turn, Some(A3));
        let next = decide(&DeliveryInput {
            last_woken: d.turn,
            ..input(Policy::RoundRobin)
        });
        assert_eq!(next.turn, Some(A1));
        // Several agents mentioned: still one, the first of them in rotation order.
        let d = decide(&DeliveryInput {
            mentions: &[A1, A3],
            last_woken: Some(A1),
            ..input(Policy::RoundRobin)
        });
        check(&d, &[A3], &[], Observe);
    }

    #[test]
    fn round_robin_never_wakes_the_author_and_never_rotates_humans() {
        // An agent author is skipped in the rotation.
        let d = decide(&DeliveryInput {
            author: A2,
            last_woken: Some(A1),
            ..input(Policy::RoundRobin)
        });
        assert_eq!(d.turn, Some(A3));
        assert_eq!(d.mark_for(A2), Observe);
        assert_eq!(d.mark_for(AUTHOR), Observe);
        // Mentioning itself does not make the author the one woken.
        let d = decide(&DeliveryInput {
            author: A2,
            mentions: &[A2],
            last_woken: Some(A2),
            ..input(Policy::RoundRobin)
        });
        assert_eq!(d.turn, Some(A3));
        // No agents (humans only): nobody is woken.
        let d = decide(&DeliveryInput {
            agents: &[],
            mentions: &[H1],
            ..input(Policy::RoundRobin)
        });
        assert_eq!(d.turn, None);
        check(&d, &[], &[], Observe);
        // The only agent is the author: nobody is woken.
        let d = decide(&DeliveryInput {
            author: A1,
            agents: &[A1],
            ..input(Policy::RoundRobin)
        });
        assert_eq!(d.turn, None);
        // A last-woken agent that has left the channel: the rotation goes on after its id.
        let d = decide(&DeliveryInput {
            agents: &[A1, A3],
            last_woken: Some(A2),
            ..input(Policy::RoundRobin)
        });
        assert_eq!(d.turn, Some(A3));
    }

    #[test]
    fn the_author_is_never_woken_under_any_policy() {
        for policy in [
            Policy::All,
            Policy::Mentions,
            Policy::Broadcast,
            Policy::OnDuty,
            Policy::Custom,
            Policy::RoundRobin,
            Policy::Dm,
        ] {
            for author in EVERYONE {
                let d = decide(&DeliveryInput {
                    policy,
                    author,
                    mentions: &EVERYONE,
                    on_duty: &EVERYONE,
                    wake_list: &EVERYONE,
                    observers: &EVERYONE,
                    agents: &AGENTS,
                    last_woken: None,
                });
                assert_eq!(d.mark_for(author), Observe, "{policy:?} author {author}");
            }
        }
    }

    /// Every recipient's mark, straight from the SPEC's table, one recipient at a time:
    /// an independent statement of the rules to check [`decide`] against.
    fn oracle(input: &DeliveryInput<'_>, r: UserId) -> Mark {
        let has = |list: &[UserId], u: UserId| list.contains(&u);
        if r == input.author {
            return Observe;
        }
        let mentioned: Vec<UserId> = input
            .mentions
            .iter()
            .copied()
            .filter(|u| *u != input.author)
            .collect();
        match input.policy {
            Policy::All if mentioned.is_empty() => Wake,
            Policy::All | Policy::Mentions => {
                if has(&mentioned, r) {
                    Wake
                } else {
                    Observe
                }
            }
            Policy::Broadcast => Observe,
            Policy::OnDuty if has(input.on_duty, r) || has(&mentioned, r) => Wake,
            Policy::OnDuty if has(input.observers, r) => Observe,
            Policy::OnDuty => Skip,
            Policy::Custom if has(input.wake_list, r) => Wake,
            Policy::Custom => Observe,
            Policy::RoundRobin => {
                let mut eligible: Vec<UserId> = input
                    .agents
                    .iter()
                    .copied()
                    .filter(|a| *a != input.author)
                    .collect();
                eligible.sort();
                eligible.dedup();
                let named: Vec<UserId> = eligible
                    .iter()
                    .copied()
                    .filter(|a| has(&mentioned, *a))
                    .collect();
                let pool = if named.is_empty() { eligible } else { named };
                let next = pool
                    .iter()
                    .find(|a| input.last_woken.is_some_and(|l| **a > l))
                    .or(pool.first());
                if next == Some(&r) { Wake } else { Observe }
            }
            Policy::Dm => Wake,
        }
    }

    /// All subsets of `of`.
    fn subsets(of: &[UserId]) -> Vec<Vec<UserId>> {
        (0..1u32 << of.len())
            .map(|bits| {
                of.iter()
                    .enumerate()
                    .filter(|(i, _)| bits & (1 << i) != 0)
                    .map(|(_, u)| *u)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn decide_agrees_with_the_table_for_every_combination() {
        // Two humans and three agents; every author, every set of mentions, and every
        // list the policy reads; the round-robin turn at every agent and at none.
        let people = [H1, H2, A1, A2, A3];
        let all_subsets = subsets(&people);
        let small = subsets(&[H2, A1, A3]);
        let stranger = UserId(999);
        let mut checked = 0u64;
        let policies = [
            Policy::All,
            Policy::Mentions,
            Policy::Broadcast,
            Policy::OnDuty,
            Policy::Custom,
            Policy::RoundRobin,
            Policy::Dm,
        ];
        for policy in policies {
            for author in people {
                for mentions in &all_subsets {
                    let lists: Vec<(&[UserId], &[UserId], &[UserId])> = match policy {
                        Policy::OnDuty => small
                            .iter()
                            .flat_map(|d| small.iter().map(move |o| (&d[..], &[][..], &o[..])))
                            .collect(),
                        Policy::Custom => {
                            small.iter().map(|w| (&[][..], &w[..], &[][..])).collect()
                        }
                        _ => vec![(&[][..], &[][..], &[][..])],
                    };
                    let turns: &[Option<UserId>] = if policy == Policy::RoundRobin {
                        &[None, Some(A1), Some(A2), Some(A3)]
                    } else {
                        &[None]
                    };
                    for (on_duty, wake_list, observers) in lists {
                        for &last_woken in turns {
                            let input = DeliveryInput {
                                policy,
                                author,
                                mentions,
                                on_duty,
                                wake_list,
                                observers,
                                agents: &AGENTS,
                                last_woken,
                            };
                            let d = decide(&input);
                            let marks = d.marks();
                            for r in people {
                                let expected = oracle(&input, r);
                                assert_eq!(d.mark_for(r), expected, "{input:?} recipient {r}");
                                assert_eq!(marks.mark_for(r.0), expected);
                                checked += 1;
                            }
                            // Someone outside the channel's lists: the default.
                            let outside = if policy == Policy::OnDuty {
                                Skip
                            } else {
                                d.default
                            };
                            assert_eq!(d.mark_for(stranger), outside);
                            assert_ne!(d.mark_for(author), Wake);
                            if policy == Policy::RoundRobin {
                                let woken = people.iter().filter(|u| d.mark_for(**u) == Wake);
                                assert!(woken.count() <= 1, "{input:?}");
                                assert!(d.turn.is_none_or(|t| AGENTS.contains(&t) && t != author));
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 64_000, "every combination was checked");
    }
}
