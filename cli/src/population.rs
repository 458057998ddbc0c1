//! A synthetic media audience: a catalog with power-law popularity, users
//! drawn from taste clusters, and their sessions by hour and device class.
//!
//! Everything is drawn from one seeded generator, so a seed gives the same
//! population on every machine.

use hearth_core::{CatalogItem, DeviceClass, Event, EventContext, EventKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const GENRES: [&str; 18] = [
    "drama",
    "comedy",
    "thriller",
    "documentary",
    "sci-fi",
    "romance",
    "animation",
    "crime",
    "horror",
    "kids",
    "sport",
    "news",
    "music",
    "reality",
    "history",
    "fantasy",
    "action",
    "cooking",
];
const LANGUAGES: [(&str, f64); 5] = [("en", 0.55), ("es", 0.17), ("fr", 0.1), ("de", 0.1), ("ja", 0.08)];
const RATINGS: [&str; 5] = ["G", "PG", "PG-13", "TV-14", "TV-MA"];
const ADJECTIVES: [&str; 24] = [
    "Silent", "Crimson", "Last", "Hidden", "Golden", "Broken", "Distant", "Wild", "Frozen", "Midnight", "Lost",
    "Electric", "Quiet", "Burning", "Secret", "Paper", "Northern", "Endless", "Hollow", "Bright", "Iron", "Velvet",
    "Restless", "Second",
];
const NOUNS: [&str; 24] = [
    "Harbor", "Kingdom", "Signal", "Garden", "Frontier", "Orchard", "Tide", "Witness", "Machine", "Summer", "Circuit",
    "Lantern", "Empire", "River", "Season", "Republic", "Kitchen", "Station", "Island", "Alibi", "Horizon", "Choir",
    "Ledger", "Voyage",
];
/// The simulated history ends here (2026-11-01T00:00:00Z) unless the clock
/// says it is earlier.
const HISTORY_END_MS: i64 = 1_793_491_200_000;
const DAY_MS: i64 = 86_400_000;

pub struct PopulationSpec {
    pub items: usize,
    pub clusters: usize,
    pub days: i64,
}

impl Default for PopulationSpec {
    fn default() -> Self {
        PopulationSpec { items: 1500, clusters: 8, days: 60 }
    }
}

/// A taste cluster: genre weights, a language lean, hours and devices.
struct Cluster {
    genre_weight: Vec<f64>,
    language: usize,
    peak_hour: f64,
    devices: [f64; 5],
}

pub struct User {
    pub id: usize,
    pub locale: String,
    genre_weight: Vec<f64>,
    language: usize,
    sessions_per_week: f64,
    peak_hour: f64,
    devices: [f64; 5],
    /// Items this user is especially drawn to (their personal long tail).
    favourites: Vec<usize>,
}

pub struct Population {
    pub catalog: Vec<CatalogItem>,
    clusters: Vec<Cluster>,
    /// Normalized popularity weights of the catalog.
    popularity: Vec<f64>,
    item_genres: Vec<Vec<usize>>,
    item_language: Vec<usize>,
    spec: PopulationSpec,
    end_ms: i64,
}

fn normal(rng: &mut StdRng) -> f64 {
    // Box-Muller.
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn pick(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

impl Population {
    pub fn generate(spec: PopulationSpec, seed: u64) -> Population {
        let mut rng = StdRng::seed_from_u64(seed);
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let end_ms = HISTORY_END_MS.min(now);

        let clusters: Vec<Cluster> = (0..spec.clusters)
            .map(|_| {
                let mut genre_weight = vec![0.05; GENRES.len()];
                for _ in 0..3 {
                    genre_weight[rng.random_range(0..GENRES.len())] += rng.random_range(1.0..4.0);
                }
                let mut devices = [0.0; 5];
                for d in devices.iter_mut() {
                    *d = rng.random_range(0.05..1.0);
                }
                devices[rng.random_range(0..5)] += 2.0;
                Cluster {
                    genre_weight,
                    language: pick(&mut rng, &LANGUAGES.map(|l| l.1)),
                    peak_hour: rng.random_range(17.0..23.0),
                    devices,
                }
            })
            .collect();

        let mut catalog = Vec::with_capacity(spec.items);
        let mut item_genres = Vec::with_capacity(spec.items);
        let mut item_language = Vec::with_capacity(spec.items);
        // Power-law popularity over a random permutation of ranks.
        let mut ranks: Vec<usize> = (1..=spec.items).collect();
        for i in (1..ranks.len()).rev() {
            ranks.swap(i, rng.random_range(0..=i));
        }
        let popularity: Vec<f64> = ranks.iter().map(|r| (*r as f64).powf(-0.9)).collect();
        let pop_total: f64 = popularity.iter().sum();
        for (n, weight) in popularity.iter().enumerate() {
            let g = rng.random_range(1..=3usize);
            let mut genres: Vec<usize> = Vec::new();
            // Genres cluster: the first is any, the rest lean to a cluster's.
            let c = &clusters[rng.random_range(0..clusters.len())];
            while genres.len() < g {
                let x = pick(&mut rng, &c.genre_weight);
                if !genres.contains(&x) {
                    genres.push(x);
                }
            }
            let lang = if rng.random::<f64>() < 0.5 { c.language } else { pick(&mut rng, &LANGUAGES.map(|l| l.1)) };
            let episodic = rng.random::<f64>() < 0.4;
            let minutes = if episodic { rng.random_range(20..60) } else { rng.random_range(80..160) };
            let title = format!(
                "The {} {}{}",
                ADJECTIVES[rng.random_range(0..ADJECTIVES.len())],
                NOUNS[rng.random_range(0..NOUNS.len())],
                if episodic {
                    format!(" S{}E{}", rng.random_range(1..6), rng.random_range(1..13))
                } else {
                    String::new()
                }
            );
            catalog.push(CatalogItem {
                id: format!("item-{n:05}"),
                title,
                categories: genres.iter().map(|g| GENRES[*g].to_string()).collect(),
                language: Some(LANGUAGES[lang].0.to_string()),
                duration_ms: Some(minutes * 60_000),
                release_year: Some(rng.random_range(1975..=2026)),
                popularity: (weight / pop_total * 1e6).round() / 10.0,
                content_rating: Some(RATINGS[rng.random_range(0..RATINGS.len())].to_string()),
            });
            item_genres.push(genres);
            item_language.push(lang);
        }
        let popularity = popularity.iter().map(|p| p / pop_total).collect();
        Population { catalog, clusters, popularity, item_genres, item_language, spec, end_ms }
    }

    /// The `n`th user, the same for a given population seed and `n`.
    pub fn user(&self, n: usize, seed: u64) -> User {
        let mut rng = StdRng::seed_from_u64(seed ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let a = &self.clusters[rng.random_range(0..self.clusters.len())];
        let b = &self.clusters[rng.random_range(0..self.clusters.len())];
        let mix: f64 = rng.random_range(0.6..1.0);
        let genre_weight = a.genre_weight.iter().zip(&b.genre_weight).map(|(x, y)| mix * x + (1.0 - mix) * y).collect();
        let devices: [f64; 5] = std::array::from_fn(|i| mix * a.devices[i] + (1.0 - mix) * b.devices[i]);
        let language = if rng.random::<f64>() < 0.8 { a.language } else { b.language };
        let favourites = (0..rng.random_range(5..20)).map(|_| rng.random_range(0..self.catalog.len())).collect();
        User {
            id: n,
            locale: match LANGUAGES[language].0 {
                "en" => "en-US",
                "es" => "es-ES",
                "fr" => "fr-FR",
                "de" => "de-DE",
                _ => "ja-JP",
            }
            .to_string(),
            genre_weight,
            language,
            sessions_per_week: (1.2 + 0.8 * normal(&mut rng)).exp().clamp(0.5, 40.0),
            peak_hour: mix * a.peak_hour + (1.0 - mix) * b.peak_hour + normal(&mut rng),
            devices,
            favourites,
        }
    }

    /// How much `user` wants item `i`, before popularity.
    fn appeal(&self, user: &User, i: usize) -> f64 {
        let genres = &self.item_genres[i];
        let g = genres.iter().map(|g| user.genre_weight[*g]).sum::<f64>() / genres.len() as f64;
        let lang = if self.item_language[i] == user.language { 1.0 } else { 0.25 };
        let fav = if user.favourites.contains(&i) { 6.0 } else { 1.0 };
        g * lang * fav
    }

    /// The user's history, oldest first.
    pub fn history(&self, user: &User, seed: u64) -> Vec<Event> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xA5A5 ^ (user.id as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let start = self.end_ms - self.spec.days * DAY_MS;
        let sessions = (user.sessions_per_week * self.spec.days as f64 / 7.0).round().max(1.0) as usize;
        // Candidate pool: the popular head plus the user's appeal.
        let weights: Vec<f64> =
            (0..self.catalog.len()).map(|i| self.popularity[i].powf(0.7) * self.appeal(user, i)).collect();
        let mut seen = std::collections::HashSet::new();
        let mut events = Vec::new();
        let mut days: Vec<i64> = (0..sessions).map(|_| rng.random_range(0..self.spec.days)).collect();
        days.sort_unstable();
        for day in days {
            let hour = (user.peak_hour + 2.5 * normal(&mut rng)).rem_euclid(24.0).floor() as u8;
            let device = DeviceClass::ALL[pick(&mut rng, &user.devices)];
            let mut t = start + day * DAY_MS + hour as i64 * 3_600_000 + rng.random_range(0..3_000_000);
            let ctx = EventContext { device, local_hour: hour, locale: Some(user.locale.clone()) };
            for _ in 0..rng.random_range(1..=4) {
                let mut i = pick(&mut rng, &weights);
                if seen.contains(&i) && rng.random::<f64>() < 0.7 {
                    i = pick(&mut rng, &weights);
                }
                let item = &self.catalog[i];
                let duration = item.duration_ms.unwrap_or(3_600_000);
                let ev = |kind, t, pos: Option<u64>| Event {
                    item_id: item.id.clone(),
                    kind,
                    timestamp_ms: t,
                    position_ms: pos,
                    duration_ms: Some(duration),
                    context: ctx.clone(),
                };
                let via_search = rng.random::<f64>() < 0.08;
                events.push(ev(if via_search { EventKind::Search } else { EventKind::Impression }, t, None));
                t += rng.random_range(2_000..30_000);
                let appeal = self.appeal(user, i);
                let p_finish = (appeal / (appeal + 1.5)).clamp(0.1, 0.95);
                if rng.random::<f64>() < 0.15 * (1.0 - p_finish) {
                    events.push(ev(EventKind::Skip, t, Some(0)));
                    if rng.random::<f64>() < 0.1 {
                        events.push(ev(EventKind::Dislike, t + 1000, None));
                    }
                    continue;
                }
                events.push(ev(EventKind::Play, t, Some(0)));
                seen.insert(i);
                if rng.random::<f64>() < p_finish {
                    t += duration as i64;
                    events.push(ev(EventKind::Complete, t, Some(duration)));
                    if rng.random::<f64>() < 0.2 * p_finish {
                        events.push(ev(EventKind::Like, t + 5_000, None));
                    }
                } else {
                    let watched = (duration as f64 * rng.random_range(0.05..0.6)) as u64;
                    t += watched as i64;
                    events.push(ev(EventKind::Progress, t, Some(watched)));
                    if rng.random::<f64>() < 0.5 {
                        events.push(ev(EventKind::Skip, t + 1000, Some(watched)));
                    }
                }
                t += rng.random_range(10_000..120_000);
            }
        }
        events.sort_by_key(|e| e.timestamp_ms);
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_population() {
        let a = Population::generate(PopulationSpec { items: 200, ..Default::default() }, 3);
        let b = Population::generate(PopulationSpec { items: 200, ..Default::default() }, 3);
        assert_eq!(a.catalog, b.catalog);
        assert_eq!(a.history(&a.user(5, 3), 3), b.history(&b.user(5, 3), 3));
        let c = Population::generate(PopulationSpec { items: 200, ..Default::default() }, 4);
        assert_ne!(a.catalog, c.catalog);
    }

    #[test]
    fn histories_are_realistic() {
        let pop = Population::generate(PopulationSpec { items: 500, ..Default::default() }, 11);
        let mut total = 0;
        let mut genre_share = vec![0usize; GENRES.len()];
        for n in 0..40 {
            let user = pop.user(n, 11);
            let h = pop.history(&user, 11);
            assert!(!h.is_empty());
            assert!(h.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));
            assert!(h.iter().all(|e| e.context.local_hour < 24));
            total += h.len();
            for e in h.iter().filter(|e| e.kind == EventKind::Complete) {
                let item = pop.catalog.iter().find(|i| i.id == e.item_id).unwrap();
                genre_share[GENRES.iter().position(|g| *g == item.categories[0]).unwrap()] += 1;
            }
        }
        assert!(total > 40 * 10, "too few events: {total}");
        // Tastes are concentrated: the top genre gets far more than average.
        let max = *genre_share.iter().max().unwrap() as f64;
        let mean = genre_share.iter().sum::<usize>() as f64 / GENRES.len() as f64;
        assert!(max > 2.0 * mean);
        // Popularity follows a power law: the top 10% of items hold a large share.
        let mut pops: Vec<f64> = pop.catalog.iter().map(|i| i.popularity).collect();
        pops.sort_by(|a, b| b.total_cmp(a));
        let head: f64 = pops[..50].iter().sum();
        assert!(head / pops.iter().sum::<f64>() > 0.3);
    }
}
