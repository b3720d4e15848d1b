//! The synthetic population of `oo simulate`: people with hidden preferences, the signals their
//! apps send, when they open oO, and how they react to a served tip. Pure and deterministic: every
//! random draw comes from a SplitMix64 stream keyed by (world seed, person, what, day or instant),
//! never by call order across people, so the same seed gives the same world whatever order people
//! are processed in. The mutable state is per person and changes in time order: the signals
//! already sent (oO's view of mood and place) and the tasks (snoozes, scheduled completions).
//!
//! # People
//! Person `p` is drawn from the stream (seed, p): an archetype (shares 0.30/0.25/0.20/0.25), its
//! base weights plus individual noise (each weight + N(0, 0.12²); peak hours + N(0, 1 h²); fatigue
//! × e^N(0, 0.4²)), a time zone among [`ZONES`] (fixed offsets, no DST), a rhythm (waking hours and
//! three session peaks of the archetype, all shifted by N(0, 0.75 h²)), 3.5–7.5 sessions and
//! 1.5–3.5 new tasks a day on average, work hours (leave 1–2 h after waking, 8.5–9.5 h later
//! back), a mood baseline 0.2 + N(0, 0.4²), a mood volatility (1.1 for `mood_led`, else 0.6),
//! and an ignore rate uniform in [0.12, 0.28].
//! - `early_bird`: does high-priority todos in the morning (todo bump at 08:30, stronger with
//!   priority), dislikes being nagged in the evening (the same bump is negative there).
//! - `evening_reflector`: wants advice around 20:30, restful advice most; todos only near midday.
//! - `deadline_keeper`: overdue todos strongly negative (−1.2), todos due within 24 h welcome.
//! - `mood_led`: todos welcome in a good mood and unwelcome in a low one; in a low mood advice,
//!   restful advice and low_mood advice are welcome; tires fast.
//!
//! # Utility
//! With h the local hour (hour + minute/60), `bump(peak) = cos(2π(h − peak)/24)` (a linear
//! combination of oO's sin/cos hour features), M = mood/2 (the latest mood oO received, 0 if
//! none), W the weekend flag, F = min(tips_today, 10)/10, P = priority/4, and the candidate flags
//! overdue (o), due within 24 h (s), age (a, days since the task arrived / 30, capped at 1), fits
//! mood (fm), fits place (fp), restful (tag `rest` or `reflection`), exactly as oO computes them:
//! - todo: `t_base + t_amp·bump(t_hour) + t_mood·M + t_weekend·W − fatigue·F
//!   + P·(p_base + p_amp·bump(t_hour)) + overdue·o + due_soon·s + age·a`
//! - advice: `a_base + a_amp·bump(a_hour) + a_mood·M + a_weekend·W − fatigue·F + fits_mood·fm
//!   + fits_place·fp + restful·(r_base + r_amp·bump(a_hour) + r_mood·M)`
//!
//! so the utility is linear in candidate features ⊗ context features. Base weights ([`ARCHETYPES`]):
//!
//! | weight     | early_bird | evening_reflector | deadline_keeper | mood_led |
//! |------------|-----------:|------------------:|----------------:|---------:|
//! | t_base, t_amp, t_hour | −0.1, 0.6, 8.5 | −0.1, 0.4, 12 | −0.05, 0.2, 11 | 0, 0.2, 10 |
//! | t_mood, t_weekend | 0.2, −0.2 | 0.1, 0 | 0.1, −0.1 | 1.2, 0 |
//! | p_base, p_amp | 0.3, 0.8 | 0.3, 0.2 | 0.6, 0.1 | 0.3, 0.1 |
//! | overdue, due_soon, age | −0.3, 0.2, −0.2 | −0.3, 0.2, −0.1 | −1.2, 0.8, −0.4 | −0.3, 0.2, −0.1 |
//! | a_base, a_amp, a_hour | 0, 0.2, 8 | −0.1, 0.6, 20.5 | 0, 0.2, 18 | 0.05, 0.2, 17 |
//! | a_mood, a_weekend | 0.1, 0 | 0, 0.1 | 0, 0.1 | −0.4, 0.1 |
//! | fits_mood, fits_place | 0.2, 0.2 | 0.3, 0.2 | 0.2, 0.2 | 0.6, 0.2 |
//! | r_base, r_amp, r_mood | −0.1, 0, 0 | 0.2, 0.5, 0 | 0, 0, 0 | 0, 0.1, −0.7 |
//! | fatigue | 0.45 | 0.4 | 0.5 | 0.7 |
//!
//! # Response
//! The person ignores a tip with their ignore rate (no reaction, reward 0). Otherwise the reaction
//! is drawn from a softmax over scores `slope·1.5·u + offset` ([`TODO_SCORES`], [`ADVICE_SCORES`]):
//! for a todo done (+1), snooze-then-done (a snooze, then the task completes 1–20 h after the tip:
//! +1), snooze (0), helpful (+0.5), not helpful (−0.5), dismiss (−1); for an advice helpful,
//! not helpful, dismiss. This draw is the per-tip noise. A plain snooze holds the task: it does not
//! complete within 24 h of that tip (its own completion is postponed to 25 h after it), and while a
//! hold lasts, done and snooze-then-done turn into snooze. When a completion is already scheduled
//! within 24 h of a tip, a snooze there is worth +1. `expected_reward` is Σ p·reward over exactly
//! the distribution `respond` samples. Not now is worth exactly 0, and so is an unknown todo.
//!
//! # Signals
//! Per local day: a mood report at 07:00–08:30 (a daily AR(1) mood, ρ = 0.7, scaled by the
//! volatility, rounded and clamped to −2..=2); place changes (weekdays home → commute → work →
//! commute → home, 45-minute commutes; weekends, with probability 0.6, elsewhere for 2–5 h from
//! 10:30–15:00); new tasks at 08:00–21:30 (priority 1–4 with probabilities 0.30/0.35/0.20/0.15;
//! 60% due at 18:00 local 0–7 days after the day they arrive, possibly already past), each
//! completing on its own after an exponential delay (mean 6/4/2.5/1.5 days by priority, ×3 for
//! 15% of tasks, at least 1 h) unless done earlier. A done reaction completes the task at once.
//! The person's first signal is a context at the start of the first window; every context names
//! the time zone. Driver contract: fetch `signals` up to a session before serving at it.

use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeMap;
use std::f64::consts::TAU;

const DAY: i64 = 86_400;

/// The first simulated instant: Monday 2026-01-05 00:00 UTC.
pub fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_571_200, 0).unwrap_or_default()
}

/// Time zones without daylight saving time and their UTC offsets in minutes.
#[rustfmt::skip]
pub const ZONES: [(&str, i64); 9] = [
    ("UTC", 0), ("Africa/Lagos", 60), ("Africa/Nairobi", 180), ("Asia/Kolkata", 330), ("Asia/Tokyo", 540),
    ("Australia/Brisbane", 600), ("America/Sao_Paulo", -180), ("America/Bogota", -300), ("America/Phoenix", -420),
];

/// An archetype: its share of the population, base weights and daily rhythm.
pub struct Archetype {
    pub name: &'static str,
    pub share: f64,
    /// t_base, t_amp, t_hour, t_mood, t_weekend, p_base, p_amp, overdue, due_soon, age.
    pub todo: [f64; 10],
    /// a_base, a_amp, a_hour, a_mood, a_weekend, fits_mood, fits_place, r_base, r_amp, r_mood, fatigue.
    pub advice: [f64; 11],
    /// Local waking hours, the session peak hours and their weights.
    pub waking: (f64, f64),
    pub peaks: [f64; 3],
    pub peak_weights: [f64; 3],
}

/// The archetypes and their base weights (tabulated in the module documentation).
#[rustfmt::skip]
pub const ARCHETYPES: [Archetype; 4] = [
    Archetype { name: "early_bird", share: 0.30,
        todo: [-0.1, 0.6, 8.5, 0.2, -0.2, 0.3, 0.8, -0.3, 0.2, -0.2],
        advice: [0.0, 0.2, 8.0, 0.1, 0.0, 0.2, 0.2, -0.1, 0.0, 0.0, 0.45],
        waking: (6.0, 22.0), peaks: [7.5, 12.5, 18.0], peak_weights: [0.45, 0.30, 0.25] },
    Archetype { name: "evening_reflector", share: 0.25,
        todo: [-0.1, 0.4, 12.0, 0.1, 0.0, 0.3, 0.2, -0.3, 0.2, -0.1],
        advice: [-0.1, 0.6, 20.5, 0.0, 0.1, 0.3, 0.2, 0.2, 0.5, 0.0, 0.4],
        waking: (8.0, 24.0), peaks: [9.0, 13.0, 20.5], peak_weights: [0.25, 0.25, 0.50] },
    Archetype { name: "deadline_keeper", share: 0.20,
        todo: [-0.05, 0.2, 11.0, 0.1, -0.1, 0.6, 0.1, -1.2, 0.8, -0.4],
        advice: [0.0, 0.2, 18.0, 0.0, 0.1, 0.2, 0.2, 0.0, 0.0, 0.0, 0.5],
        waking: (7.0, 23.0), peaks: [8.5, 13.0, 19.0], peak_weights: [0.35, 0.35, 0.30] },
    Archetype { name: "mood_led", share: 0.25,
        todo: [0.0, 0.2, 10.0, 1.2, 0.0, 0.3, 0.1, -0.3, 0.2, -0.1],
        advice: [0.05, 0.2, 17.0, -0.4, 0.1, 0.6, 0.2, 0.0, 0.1, -0.7, 0.7],
        waking: (7.0, 23.0), peaks: [8.0, 13.0, 20.0], peak_weights: [0.30, 0.30, 0.40] },
];

/// Scale of the utility in the reaction scores.
const K: f64 = 1.5;

/// Todo reactions: (outcome, slope, offset) of the softmax score `slope·K·u + offset`.
const TODO_SCORES: [(Outcome, f64, f64); 6] = [
    (Outcome::Done, 2.0, 0.0),
    (Outcome::SnoozeThenDone, 1.0, -0.9),
    (Outcome::Snooze, 0.0, -0.4),
    (Outcome::Helpful, 1.0, -1.6),
    (Outcome::NotHelpful, -1.0, -0.1),
    (Outcome::Dismiss, -2.0, -0.9),
];

/// Advice reactions: (outcome, slope, offset).
const ADVICE_SCORES: [(Outcome, f64, f64); 3] = [
    (Outcome::Helpful, 2.0, 0.3),
    (Outcome::NotHelpful, -1.0, 0.0),
    (Outcome::Dismiss, -2.0, -1.0),
];

const VERBS: [&str; 6] = ["Call", "Email", "Pay", "Book", "Fix", "Plan"];
const OBJECTS: [&str; 6] = ["the bank", "the report", "rent", "tickets", "the bike", "the trip"];

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SplitMix64, seeded by hashing its key.
struct Rng(u64);

impl Rng {
    fn keyed(seed: u64, person: usize, what: &str, a: i64, b: u64) -> Rng {
        let parts = [person as u64]
            .into_iter()
            .chain(what.bytes().map(u64::from))
            .chain([a as u64, b]);
        Rng(parts.fold(mix(seed.wrapping_add(GOLDEN)), |h, x| mix(h.wrapping_add(GOLDEN) ^ x)))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        (-2.0 * u1.ln()).sqrt() * (TAU * self.unit()).cos()
    }
    fn pick(&mut self, weights: &[f64]) -> usize {
        let mut x = self.unit() * weights.iter().sum::<f64>();
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len().saturating_sub(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ignore,
    Done,
    Helpful,
    SnoozeThenDone,
    Snooze,
    NotHelpful,
    Dismiss,
}

impl Outcome {
    fn reaction(self) -> Option<&'static str> {
        match self {
            Self::Ignore => None,
            Self::Done => Some("done"),
            Self::Helpful => Some("helpful"),
            Self::SnoozeThenDone | Self::Snooze => Some("snooze"),
            Self::NotHelpful => Some("not_helpful"),
            Self::Dismiss => Some("dismiss"),
        }
    }
    /// oO's reward; `pending`: the task completes within 24 h of the tip whatever happens.
    fn reward(self, pending: bool) -> f64 {
        match self {
            Self::Done | Self::SnoozeThenDone => 1.0,
            Self::Snooze if pending => 1.0,
            Self::Helpful => 0.5,
            Self::Ignore | Self::Snooze => 0.0,
            Self::NotHelpful => -0.5,
            Self::Dismiss => -1.0,
        }
    }
}

/// A signal one of the person's apps sends (maps to oO's signal kinds).
#[derive(Debug, Clone, PartialEq)]
pub enum SimSignal {
    /// A task's current state; the latest one for an external_id is the task's state.
    Task {
        external_id: String,
        title: String,
        /// 1..=4, 4 most urgent.
        priority: u8,
        due: Option<DateTime<Utc>>,
        completed: bool,
    },
    Mood {
        /// -2..=2.
        score: i8,
    },
    /// place is one of "home", "work", "commute", "elsewhere"; time_zone the person's IANA zone
    /// (in every context; the person's first signal is a context).
    Context {
        place: &'static str,
        time_zone: Option<String>,
    },
}

/// A candidate as the world sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SimCandidate<'a> {
    /// One of this person's tasks, by the external_id the world gave it.
    Todo {
        external_id: &'a str,
    },
    /// An advice, by its tags (from oO's library).
    Advice {
        tags: &'a [String],
    },
    NotNow,
}

/// How the person reacts to a served tip. `reaction` is None when they ignore it.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// "done" | "helpful" | "snooze" | "not_helpful" | "dismiss", or None (no reaction).
    pub reaction: Option<&'static str>,
    /// When the person reacts: 1–15 minutes after `at` (`at` itself for not now).
    pub reacted_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Person {
    archetype: usize,
    zone: usize,
    todo: [f64; 10],
    advice: [f64; 11],
    wake: f64,
    sleep: f64,
    peaks: [f64; 3],
    sessions_mean: f64,
    tasks_mean: f64,
    leave: f64,
    back: f64,
    mood_base: f64,
    mood_vol: f64,
    ignore: f64,
}

#[derive(Debug, Clone)]
struct Task {
    title: String,
    priority: u8,
    created: DateTime<Utc>,
    due: Option<DateTime<Utc>>,
    completes_at: DateTime<Utc>,
    hold_until: Option<DateTime<Utc>>,
    closed: bool,
}

impl Task {
    fn signal(&self, id: &str, completed: bool) -> SimSignal {
        let (title, priority, due) = (self.title.clone(), self.priority, self.due);
        SimSignal::Task {
            external_id: id.to_string(),
            title,
            priority,
            due,
            completed,
        }
    }
}

/// What has been sent so far (oO's view), and the person's tasks.
#[derive(Debug, Clone, Default)]
struct PersonState {
    places: Vec<(DateTime<Utc>, &'static str)>,
    moods: Vec<(DateTime<Utc>, i8)>,
    tasks: BTreeMap<String, Task>,
}

fn bump(peak: f64, hour: f64) -> f64 {
    (TAU * (hour - peak) / 24.0).cos()
}

/// The value of the latest entry strictly before `t`.
fn latest<T: Copy>(log: &[(DateTime<Utc>, T)], t: DateTime<Utc>) -> Option<T> {
    log[..log.partition_point(|(at, _)| *at < t)].last().map(|(_, v)| *v)
}

/// The synthetic population and its state (see the module documentation).
#[derive(Debug, Clone)]
pub struct World {
    seed: u64,
    people: Vec<Person>,
    states: Vec<PersonState>,
}

impl World {
    pub fn new(people: usize, seed: u64) -> World {
        let people: Vec<Person> = (0..people).map(|p| Self::person(seed, p)).collect();
        let states = vec![PersonState::default(); people.len()];
        World { seed, people, states }
    }

    fn person(seed: u64, p: usize) -> Person {
        let mut r = Rng::keyed(seed, p, "person", 0, 0);
        let archetype = r.pick(&ARCHETYPES.map(|a| a.share));
        let a = &ARCHETYPES[archetype];
        let mut todo = a.todo.map(|w| w + 0.12 * r.normal());
        let mut advice = a.advice.map(|w| w + 0.12 * r.normal());
        (todo[2], advice[2]) = (a.todo[2] + r.normal(), a.advice[2] + r.normal());
        advice[10] = a.advice[10] * (0.4 * r.normal()).exp();
        let shift = (0.75 * r.normal()).clamp(-1.5, 1.5);
        let (wake, sleep) = (a.waking.0 + shift, (a.waking.1 + shift).min(24.0));
        let leave = wake + r.range(1.0, 2.0);
        Person {
            archetype,
            zone: r.pick(&[1.0; ZONES.len()]),
            todo,
            advice,
            wake,
            sleep,
            peaks: a.peaks.map(|h| (h + shift).clamp(wake, sleep - 0.25)),
            sessions_mean: r.range(3.5, 7.5),
            tasks_mean: r.range(1.5, 3.5),
            leave,
            back: leave + r.range(8.5, 9.5),
            mood_base: 0.2 + 0.4 * r.normal(),
            mood_vol: if a.name == "mood_led" { 1.1 } else { 0.6 },
            ignore: r.range(0.12, 0.28),
        }
    }

    pub fn people(&self) -> usize {
        self.people.len()
    }

    /// The person's IANA time zone (one without DST, so its offset is fixed).
    pub fn time_zone(&self, person: usize) -> &str {
        self.people.get(person).map_or("UTC", |p| ZONES[p.zone].0)
    }

    /// The person's archetype: "early_bird", "evening_reflector", "deadline_keeper" or "mood_led".
    pub fn archetype(&self, person: usize) -> &'static str {
        self.people.get(person).map_or("", |p| ARCHETYPES[p.archetype].name)
    }

    /// Seconds since the epoch in the person's local wall-clock time.
    fn local_secs(&self, p: usize, t: DateTime<Utc>) -> i64 {
        (t - epoch()).num_seconds() + self.people.get(p).map_or(0, |x| ZONES[x.zone].1) * 60
    }

    fn local_day(&self, p: usize, t: DateTime<Utc>) -> i64 {
        self.local_secs(p, t).div_euclid(DAY)
    }

    /// The instant of local hour `hour` (rounded to the minute) on local day `day`.
    fn local(&self, p: usize, day: i64, hour: f64) -> DateTime<Utc> {
        let minutes = (hour * 60.0).round() as i64 - self.people.get(p).map_or(0, |x| ZONES[x.zone].1);
        epoch() + Duration::seconds(day * DAY + minutes * 60)
    }

    /// The instants at which the person opens oO during [from, to): 3 to 8 per local day, around
    /// the person's peak hours within their waking hours. Sorted.
    pub fn sessions(&self, person: usize, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let Some(x) = self.people.get(person) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for day in self.local_day(person, from)..=self.local_day(person, to) {
            let mut r = Rng::keyed(self.seed, person, "sessions", day, 0);
            let n = (x.sessions_mean + 1.2 * r.normal()).round().clamp(3.0, 8.0) as usize;
            let mut times: Vec<DateTime<Utc>> = (0..n)
                .map(|_| {
                    let k = r.pick(&ARCHETYPES[x.archetype].peak_weights);
                    let hour = (x.peaks[k] + 1.2 * r.normal()).clamp(x.wake, x.sleep - 0.25);
                    self.local(person, day, hour)
                })
                .collect();
            times.sort();
            for i in 1..times.len() {
                times[i] = times[i].max(times[i - 1] + Duration::minutes(1));
            }
            out.extend(times.into_iter().filter(|t| from <= *t && *t < to));
        }
        out
    }

    /// The place changes of a local day; every day starts and ends at home.
    fn transitions(&self, p: usize, day: i64) -> Vec<(DateTime<Utc>, &'static str)> {
        let Some(x) = self.people.get(p) else { return Vec::new() };
        let mut r = Rng::keyed(self.seed, p, "place", day, 0);
        let hours = if day.rem_euclid(7) < 5 {
            let leave = x.leave + 0.25 * r.normal();
            let back = (x.back + 0.3 * r.normal()).min(22.5);
            vec![
                (leave, "commute"),
                (leave + 0.75, "work"),
                (back, "commute"),
                (back + 0.75, "home"),
            ]
        } else if r.unit() < 0.6 {
            let out = r.range(10.5, 15.0);
            vec![(out, "elsewhere"), (out + r.range(2.0, 5.0), "home")]
        } else {
            Vec::new()
        };
        hours
            .into_iter()
            .map(|(h, place)| (self.local(p, day, h), place))
            .collect()
    }

    /// The mood report of a local day: when, and the score (a daily AR(1) around the baseline).
    fn mood_report(&self, p: usize, day: i64) -> (DateTime<Utc>, i8) {
        let Some(x) = self.people.get(p) else {
            return (epoch(), 0);
        };
        let at = self.local(p, day, Rng::keyed(self.seed, p, "mood_time", day, 0).range(7.0, 8.5));
        let rho: f64 = 0.7;
        let walk: f64 = (0..20)
            .map(|k| rho.powi(k) * Rng::keyed(self.seed, p, "mood", day - i64::from(k), 0).normal())
            .sum();
        let score = (x.mood_base + x.mood_vol * (1.0 - rho * rho).sqrt() * walk)
            .round()
            .clamp(-2.0, 2.0);
        (at, score as i8)
    }

    /// The tasks arriving on a local day, by external id.
    fn new_tasks(&self, p: usize, day: i64) -> Vec<(String, Task)> {
        let Some(x) = self.people.get(p) else { return Vec::new() };
        let mut r = Rng::keyed(self.seed, p, "tasks", day, 0);
        let n = (x.tasks_mean + r.normal()).round().clamp(0.0, 6.0) as usize;
        (0..n)
            .map(|i| {
                let created = self.local(p, day, r.range(8.0, 21.5));
                let priority = 1 + r.pick(&[0.30, 0.35, 0.20, 0.15]) as u8;
                let due = (r.unit() >= 0.4).then(|| {
                    let k = [0, 1, 2, 3, 5, 7][r.pick(&[0.15, 0.30, 0.25, 0.15, 0.10, 0.05])];
                    self.local(p, day + k, 18.0)
                });
                let slow = if r.unit() < 0.15 { 3.0 } else { 1.0 };
                let days = (-[6.0, 4.0, 2.5, 1.5][usize::from(priority - 1)] * slow * (1.0 - r.unit()).ln())
                    .clamp(1.0 / 24.0, 30.0);
                let title = format!("{} {}", VERBS[r.pick(&[1.0; 6])], OBJECTS[r.pick(&[1.0; 6])]);
                let completes_at = created + Duration::seconds((days * DAY as f64) as i64);
                (
                    format!("t{day}-{i}"),
                    Task {
                        title,
                        priority,
                        created,
                        due,
                        completes_at,
                        hold_until: None,
                        closed: false,
                    },
                )
            })
            .collect()
    }

    /// The signals the person's apps send during [from, to), sorted by time. Calls for one person
    /// come in increasing, non-overlapping windows.
    pub fn signals(
        &mut self,
        person: usize,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, SimSignal)> {
        if person >= self.people.len() || from >= to {
            return Vec::new();
        }
        let days = self.local_day(person, from)..=self.local_day(person, to);
        let in_window = |t: &DateTime<Utc>| from <= *t && *t < to;
        let mut places: Vec<_> = days
            .clone()
            .flat_map(|d| self.transitions(person, d))
            .filter(|(t, _)| in_window(t))
            .collect();
        if self.states[person].places.is_empty() {
            let first = latest(&self.transitions(person, self.local_day(person, from)), from);
            places.insert(0, (from, first.unwrap_or("home")));
        }
        let moods: Vec<_> = days
            .clone()
            .map(|d| self.mood_report(person, d))
            .filter(|(t, _)| in_window(t))
            .collect();
        let arrived: Vec<_> = days
            .flat_map(|d| self.new_tasks(person, d))
            .filter(|(_, t)| in_window(&t.created))
            .collect();
        let time_zone = self.time_zone(person).to_string();
        let state = &mut self.states[person];
        // (instant, rank, id, signal); at equal instants: context, mood, new task, completion.
        let mut out: Vec<(DateTime<Utc>, u8, String, SimSignal)> = Vec::new();
        for &(at, place) in &places {
            out.push((
                at,
                0,
                String::new(),
                SimSignal::Context {
                    place,
                    time_zone: Some(time_zone.clone()),
                },
            ));
        }
        out.extend(
            moods
                .iter()
                .map(|&(at, score)| (at, 1, String::new(), SimSignal::Mood { score })),
        );
        state.places.extend(places);
        state.moods.extend(moods);
        for (id, task) in arrived {
            out.push((task.created, 2, id.clone(), task.signal(&id, false)));
            state.tasks.entry(id).or_insert(task);
        }
        for (id, task) in state.tasks.iter_mut().filter(|(_, t)| !t.closed && t.completes_at < to) {
            task.closed = true;
            out.push((task.completes_at.max(from), 3, id.clone(), task.signal(id, true)));
        }
        out.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
        out.into_iter().map(|(at, _, _, s)| (at, s)).collect()
    }

    /// The hidden utility of a todo (with its task) or an advice (see the module documentation).
    fn utility(&self, p: usize, candidate: SimCandidate<'_>, task: Option<&Task>, at: DateTime<Utc>, tips: u32) -> f64 {
        let (Some(x), Some(state)) = (self.people.get(p), self.states.get(p)) else {
            return 0.0;
        };
        let secs = self.local_secs(p, at);
        let hour = secs.div_euclid(60).rem_euclid(1440) as f64 / 60.0;
        let weekend = f64::from(u8::from(secs.div_euclid(DAY).rem_euclid(7) >= 5));
        let mood_score = latest(&state.moods, at);
        let mood = mood_score.map_or(0.0, |s| f64::from(s) / 2.0);
        let flag = |b: bool| f64::from(u8::from(b));
        let dot = |w: &[f64], terms: &[f64]| w.iter().zip(terms).map(|(w, t)| w * t).sum::<f64>();
        let tired = f64::from(tips.min(10)) / 10.0;
        match (candidate, task) {
            (SimCandidate::Todo { .. }, Some(t)) => {
                let (tb, prio) = (bump(x.todo[2], hour), f64::from(t.priority) / 4.0);
                let overdue = flag(t.due.is_some_and(|d| d < at));
                let soon = flag(t.due.is_some_and(|d| d >= at && d - at <= Duration::hours(24)));
                let age = ((at - t.created).num_minutes().max(0) as f64 / 1440.0 / 30.0).min(1.0);
                // t_base, t_amp, t_hour (no term), t_mood, t_weekend, p_base, p_amp, overdue, due_soon, age.
                let terms = [1.0, tb, 0.0, mood, weekend, prio, prio * tb, overdue, soon, age];
                dot(&x.todo, &terms) - x.advice[10] * tired
            }
            (SimCandidate::Advice { tags }, _) => {
                let has = |tag: &str| tags.iter().any(|t| t == tag);
                let fm = flag(match mood_score {
                    Some(s) if s < 0 => has("low_mood"),
                    Some(s) if s > 0 => has("good_mood"),
                    _ => false,
                });
                let fp = flag(latest(&state.places, at).is_some_and(|p| p != "elsewhere" && has(p)));
                let (ab, rest) = (bump(x.advice[2], hour), flag(has("rest") || has("reflection")));
                let (rest_ab, rest_mood) = (rest * ab, rest * mood);
                // a_base, a_amp, a_hour (no term), a_mood, a_weekend, fits_mood, fits_place, r_base, r_amp,
                // r_mood, fatigue.
                let terms = [1.0, ab, 0.0, mood, weekend, fm, fp, rest, rest_ab, rest_mood, -tired];
                dot(&x.advice, &terms)
            }
            _ => 0.0,
        }
    }

    /// The outcome distribution of serving `candidate`: (outcome, probability, reward), and whether
    /// a task's completion is already due within 24 h. Empty for not now and unknown tasks.
    fn outcomes(
        &self,
        p: usize,
        candidate: SimCandidate<'_>,
        at: DateTime<Utc>,
        tips: u32,
    ) -> (Vec<(Outcome, f64, f64)>, bool) {
        let Some(x) = self.people.get(p) else {
            return (Vec::new(), false);
        };
        let (task, scores): (_, &[(Outcome, f64, f64)]) = match candidate {
            SimCandidate::NotNow => return (Vec::new(), false),
            SimCandidate::Advice { .. } => (None, &ADVICE_SCORES),
            SimCandidate::Todo { external_id } => match self.states[p].tasks.get(external_id) {
                Some(t) => (Some(t), &TODO_SCORES),
                None => return (Vec::new(), false),
            },
        };
        let held = task.is_some_and(|t| t.closed || t.hold_until.is_some_and(|h| at < h));
        let pending = !held && task.is_some_and(|t| t.completes_at <= at + Duration::hours(24));
        let u = self.utility(p, candidate, task, at, tips);
        let top = scores
            .iter()
            .map(|(_, s, o)| s * K * u + o)
            .fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = scores.iter().map(|(_, s, o)| (s * K * u + o - top).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut out = vec![(Outcome::Ignore, x.ignore, 0.0)];
        for (&(outcome, ..), w) in scores.iter().zip(weights) {
            let outcome = if held && matches!(outcome, Outcome::Done | Outcome::SnoozeThenDone) {
                Outcome::Snooze
            } else {
                outcome
            };
            let prob = (1.0 - x.ignore) * w / total;
            match out.iter_mut().find(|(o, ..)| *o == outcome) {
                Some(entry) => entry.1 += prob,
                None => out.push((outcome, prob, outcome.reward(pending))),
            }
        }
        (out, pending)
    }

    /// The expected reward of serving `candidate` to the person at `at`: Σ p·reward over exactly
    /// the distribution `respond` samples, under oO's reward rules. Not now is exactly 0.
    pub fn expected_reward(
        &self,
        person: usize,
        candidate: SimCandidate<'_>,
        at: DateTime<Utc>,
        tips_today: u32,
    ) -> f64 {
        self.outcomes(person, candidate, at, tips_today)
            .0
            .iter()
            .map(|(_, p, r)| p * r)
            .sum()
    }

    /// Samples the person's reaction to a served tip (`seed` is the simulation's seed for this
    /// decision). A snooze may schedule the task's completion 1–20 h later and a done completes it
    /// when the person reacts; either comes out of `signals` as a completed Task.
    pub fn respond(
        &mut self,
        person: usize,
        candidate: SimCandidate<'_>,
        at: DateTime<Utc>,
        tips_today: u32,
        seed: u64,
    ) -> Response {
        let (outcomes, pending) = self.outcomes(person, candidate, at, tips_today);
        if outcomes.is_empty() {
            return Response {
                reaction: None,
                reacted_at: at,
            };
        }
        let mut r = Rng::keyed(self.seed, person, "respond", at.timestamp(), seed);
        let outcome = outcomes[r.pick(&outcomes.iter().map(|o| o.1).collect::<Vec<_>>())].0;
        let reacted_at = at + Duration::seconds(60 + (r.unit() * 840.0) as i64);
        let later = at + Duration::minutes(r.range(60.0, 1200.0) as i64);
        if let SimCandidate::Todo { external_id } = candidate
            && let Some(task) = self.states[person].tasks.get_mut(external_id)
            && !task.closed
        {
            let day = at + Duration::hours(24);
            match outcome {
                Outcome::Done => task.completes_at = task.completes_at.min(reacted_at),
                Outcome::SnoozeThenDone => task.completes_at = task.completes_at.min(later),
                Outcome::Snooze if !pending => {
                    task.hold_until = Some(task.hold_until.map_or(day, |h| h.max(day)));
                    task.completes_at = task.completes_at.max(day + Duration::hours(1));
                }
                _ => {}
            }
        }
        Response {
            reaction: outcome.reaction(),
            reacted_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADVICE: [&[&str]; 10] = [
        &["morning", "home", "health"],
        &["morning", "weekday", "planning", "work"],
        &["morning", "low_mood", "rest"],
        &["midday", "work", "focus"],
        &["afternoon", "work", "good_mood", "learning"],
        &["afternoon", "home", "tidy"],
        &["evening", "home", "rest"],
        &["evening", "reflection", "low_mood"],
        &["evening", "social", "good_mood"],
        &["night", "home", "rest", "reflection"],
    ];

    fn advice() -> Vec<Vec<String>> {
        ADVICE
            .iter()
            .map(|a| a.iter().map(|t| t.to_string()).collect())
            .collect()
    }

    /// Runs a person for `days` days, serving their first open todo at each session; a log.
    fn run(w: &mut World, p: usize, days: i64) -> Vec<String> {
        let (mut log, mut last, mut open) = (Vec::new(), epoch(), Vec::<String>::new());
        let sessions = w.sessions(p, epoch(), epoch() + Duration::days(days));
        for (i, s) in sessions.into_iter().enumerate() {
            for (at, sig) in w.signals(p, last, s) {
                if let SimSignal::Task {
                    external_id: id,
                    completed,
                    ..
                } = &sig
                {
                    open.retain(|o| o != id);
                    open.extend((!completed).then(|| id.clone()));
                }
                log.push(format!("{at} {sig:?}"));
            }
            last = s;
            if let Some(id) = open.first().cloned() {
                let r = w.respond(p, SimCandidate::Todo { external_id: &id }, s, 1, i as u64);
                log.push(format!("{s} {id} {r:?}"));
            }
        }
        log
    }

    #[test]
    fn the_same_seed_gives_the_same_world_in_any_order_and_another_seed_another() {
        let (mut a, mut b, mut c) = (World::new(5, 7), World::new(5, 7), World::new(5, 8));
        let a3 = run(&mut a, 3, 6);
        let a1 = run(&mut a, 1, 6);
        let (b1, b3) = (run(&mut b, 1, 6), run(&mut b, 3, 6));
        assert_eq!((&a1, &a3), (&b1, &b3));
        assert_ne!(a1, run(&mut c, 1, 6));
        assert!(a1.iter().any(|l| l.contains("reaction: Some")) && a1.iter().any(|l| l.contains("completed: true")));
    }

    #[test]
    fn sessions_and_signals_are_well_formed() {
        let mut w = World::new(20, 1);
        assert_eq!(epoch().to_rfc3339(), "2026-01-05T00:00:00+00:00");
        for p in 0..20 {
            assert!(ZONES.iter().any(|z| z.0 == w.time_zone(p)));
            for day in 0..7 {
                let s = w.sessions(p, w.local(p, day, 0.0), w.local(p, day + 1, 0.0));
                assert!((3..=8).contains(&s.len()) && s.windows(2).all(|x| x[0] < x[1]), "{s:?}");
            }
            let sig = w.signals(p, epoch(), epoch() + Duration::days(3));
            assert!(matches!(&sig[0], (t, SimSignal::Context { time_zone: Some(_), .. }) if *t == epoch()));
            assert!(sig.windows(2).all(|x| x[0].0 <= x[1].0));
            assert!(sig.iter().any(|s| matches!(s.1, SimSignal::Mood { .. })));
        }
    }

    #[test]
    fn not_now_is_worth_exactly_zero() {
        let mut w = World::new(3, 9);
        let at = epoch() + Duration::hours(30);
        w.signals(0, epoch(), at);
        assert_eq!(w.expected_reward(0, SimCandidate::NotNow, at, 3), 0.0);
        let r = w.respond(0, SimCandidate::NotNow, at, 3, 5);
        assert!(r.reaction.is_none() && r.reacted_at == at);
    }

    /// The reward oO settles a served tip on, the snooze join included.
    fn realized(w: &World, p: usize, c: SimCandidate<'_>, at: DateTime<Utc>, seed: u64) -> f64 {
        let mut w = w.clone();
        match (w.respond(p, c, at, 2, seed).reaction, c) {
            (Some("done"), _) => 1.0,
            (Some("helpful"), _) => 0.5,
            (Some("not_helpful"), _) => -0.5,
            (Some("dismiss"), _) => -1.0,
            (Some("snooze"), SimCandidate::Todo { external_id }) => {
                let sig = w.signals(p, at, at + Duration::hours(24));
                let done = |s: &SimSignal| matches!(s, SimSignal::Task { external_id: id, completed: true, .. } if id == external_id);
                f64::from(u8::from(sig.iter().any(|(_, s)| done(s))))
            }
            _ => 0.0,
        }
    }

    #[test]
    fn expected_reward_matches_the_mean_of_respond() {
        let mut w = World::new(4, 11);
        let at = epoch() + Duration::hours(60);
        w.signals(2, epoch(), at);
        let open = w.states[2].tasks.iter().find(|(_, t)| !t.closed);
        let id = open.map(|(id, _)| id.clone()).unwrap_or_default();
        let tags = advice();
        for stage in 0..5 {
            let c = match stage {
                0..3 => SimCandidate::Todo { external_id: &id },
                _ => SimCandidate::Advice { tags: &tags[stage + 3] },
            };
            let mut w = w.clone();
            if let Some(t) = w.states[2].tasks.get_mut(&id) {
                // Free, then held by a snooze 19 h ago (with its own completion 1 h later), then pending.
                (t.hold_until, t.completes_at) = match stage {
                    1 => (Some(at + Duration::hours(5)), at + Duration::hours(6)),
                    2 => (None, at + Duration::hours(10)),
                    _ => (None, at + Duration::hours(40)),
                };
            }
            let n = 20_000;
            let mean = (0..n).map(|s| realized(&w, 2, c, at, s)).sum::<f64>() / f64::from(n as u32);
            let expected = w.expected_reward(2, c, at, 2);
            assert!((mean - expected).abs() < 0.025, "stage {stage}: {mean} vs {expected}");
        }
    }

    /// The expected rewards of the open tasks of at least `priority`, and of the advices.
    fn rewards(w: &World, p: usize, at: DateTime<Utc>, tips: u32, priority: u8) -> (Vec<f64>, Vec<f64>) {
        let open = |t: &Task| !t.closed && t.created < at && t.priority >= priority;
        let todos = w.states[p].tasks.iter().filter(|(_, t)| open(t));
        let todo = todos.map(|(id, _)| w.expected_reward(p, SimCandidate::Todo { external_id: id }, at, tips));
        let reward = |t: &Vec<String>| w.expected_reward(p, SimCandidate::Advice { tags: t }, at, tips);
        (todo.collect(), advice().iter().map(reward).collect())
    }

    fn best(v: &[f64]) -> f64 {
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }

    #[test]
    fn archetypes_differ_as_intended() {
        let mut w = World::new(300, 5);
        let (mut early, mut evening) = ((0, 0), (0, 0));
        for p in 0..300 {
            // Wednesday 2026-01-14, local time.
            let (morning, night) = (w.local(p, 9, 8.0), w.local(p, 9, 20.0));
            w.signals(p, epoch(), morning);
            let ((todo, adv), (urgent, _)) = (rewards(&w, p, morning, 1, 1), rewards(&w, p, morning, 1, 4));
            match w.archetype(p) {
                "early_bird" if !urgent.is_empty() => {
                    let top = best(&urgent) >= best(&todo).max(best(&adv));
                    early = (early.0 + 1, early.1 + usize::from(top));
                }
                "evening_reflector" => {
                    let (todo, adv) = rewards(&w, p, night, 1, 1);
                    evening = (evening.0 + 1, evening.1 + usize::from(best(&adv) > best(&todo)));
                }
                _ => {}
            }
        }
        assert!(early.0 > 20 && early.1 * 10 >= early.0 * 8, "early birds: {early:?}");
        assert!(evening.0 > 40 && evening.1 * 20 >= evening.0 * 17, "{evening:?}");
    }

    #[test]
    fn the_best_candidate_is_clearly_better_than_the_average_one() {
        let mut w = World::new(100, 21);
        let (mut top, mut mean, mut moments, mut not_now_best) = (0.0, 0.0, 0.0, 0);
        for p in 0..100 {
            let mut last = epoch();
            for s in w.sessions(p, epoch(), epoch() + Duration::days(14)) {
                w.signals(p, last, s);
                let tips = w.sessions(p, w.local(p, w.local_day(p, s), 0.0), s).len() as u32;
                last = s;
                let (todo, adv) = rewards(&w, p, s, tips, 1);
                let all: Vec<f64> = todo.into_iter().chain(adv).chain([0.0]).collect();
                not_now_best += usize::from(best(&all) <= 0.0);
                top += best(&all);
                mean += all.iter().sum::<f64>() / all.len() as f64;
                moments += 1.0;
            }
        }
        let (top, mean) = (top / moments, mean / moments);
        assert!(
            (0.35..0.8).contains(&top) && (-0.15..0.1).contains(&mean),
            "{top} {mean}"
        );
        assert!(
            not_now_best > 0 && (not_now_best as f64) < moments / 3.0,
            "{not_now_best}"
        );
    }
}
