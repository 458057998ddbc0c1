//! MovieLens-100K as a fleet: one device per user, with the conventions of
//! `models/movielens/evaluate.py` (see `models/movielens/README.md`), so the
//! federated numbers compare with the central ones of that script.
//!
//! * every rating is one `play` event of item `movie:<MovieLens id>` on a
//!   phone, at the rating's time shifted by whole days so that the newest
//!   rating is 2 to 3 days before now, `local_hour` its UTC hour;
//! * per user, ratings sorted by (timestamp, MovieLens item id): the last is
//!   held out and ranked, with the context of its hour, against every item
//!   the user has no training event for; the rest are the device's history;
//! * the catalog: titles, genres (`unknown` means none), release years, and
//!   as popularity each item's number of training interactions.
//!
//! The data (the files `ml-100k.inter` and `ml-100k.item` of the recbole
//! 1.2.1 wheel, as `models/movielens/run.sh` fetches them) is read from a
//! directory and never written anywhere.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use hearth_core::{CatalogItem, DeviceClass, Event, EventContext, EventKind, RankContext};

const DAY_MS: i64 = 86_400_000;

/// One user: the events their device records and the rating held out.
pub struct MlUser {
    pub events: Vec<Event>,
    pub held_out: String,
    pub context: RankContext,
}

pub struct MovieLens {
    pub catalog: Vec<CatalogItem>,
    pub users: Vec<MlUser>,
    pub ratings: usize,
}

/// The app's id of MovieLens item `n`.
pub fn item_id(n: u32) -> String {
    format!("movie:{n}")
}

/// The column index of each name, then the rows.
type Table = (HashMap<String, usize>, Vec<Vec<String>>);

/// The latest rating time accepted, in seconds (2100-01-01 UTC): later
/// times, and times that are not numbers, are errors in the file.
const LATEST_RATING_S: f64 = 4_102_444_800.0;

/// A tab-separated file with a `name:type` header.
fn read_table(text: &str, path: &Path) -> Result<Table> {
    let mut lines = text.lines();
    let header = lines.next().with_context(|| format!("{} is empty", path.display()))?;
    let columns = header
        .split('\t')
        .enumerate()
        .map(|(i, h)| (h.split(':').next().unwrap_or(h).to_string(), i))
        .collect::<HashMap<_, _>>();
    let rows = lines.filter(|l| !l.is_empty()).map(|l| l.split('\t').map(str::to_string).collect()).collect();
    Ok((columns, rows))
}

fn column(columns: &HashMap<String, usize>, name: &str, path: &Path) -> Result<usize> {
    columns.get(name).copied().with_context(|| format!("{}: no column {name}", path.display()))
}

fn field<'a>(row: &'a [String], at: usize, path: &Path) -> Result<&'a str> {
    row.get(at).map(String::as_str).with_context(|| format!("{}: a row is short", path.display()))
}

fn hour_of(t_s: i64) -> u8 {
    (t_s.div_euclid(3600).rem_euclid(24)) as u8
}

impl MovieLens {
    /// Reads `dir/ml-100k.inter` and `dir/ml-100k.item`; `now_ms` places
    /// the newest rating 2 to 3 days before it.
    pub fn load(dir: &Path, now_ms: i64) -> Result<MovieLens> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        MovieLens::parse(&read("ml-100k.item")?, &read("ml-100k.inter")?, now_ms)
    }

    /// [`MovieLens::load`] from the two files' text.
    pub fn parse(item_text: &str, inter_text: &str, now_ms: i64) -> Result<MovieLens> {
        let path = Path::new("ml-100k.item");
        let (cols, rows) = read_table(item_text, path)?;
        let (c_id, c_title, c_year, c_class) = (
            column(&cols, "item_id", path)?,
            column(&cols, "movie_title", path)?,
            column(&cols, "release_year", path)?,
            column(&cols, "class", path)?,
        );
        let mut catalog = Vec::with_capacity(rows.len());
        let mut index: HashMap<u32, usize> = HashMap::new();
        for row in &rows {
            let n: u32 =
                field(row, c_id, path)?.trim().parse().with_context(|| format!("{}: item id", path.display()))?;
            let title = field(row, c_title, path)?.trim();
            let year = field(row, c_year, path)?.trim();
            let release_year = match year.parse::<u16>() {
                Ok(y) if year.bytes().all(|b| b.is_ascii_digit()) && (1850..=2200).contains(&y) => Some(y),
                _ => None,
            };
            let categories = field(row, c_class, path)?
                .split(' ')
                .filter(|g| !g.is_empty() && *g != "unknown")
                .map(str::to_string)
                .collect();
            index.insert(n, catalog.len());
            catalog.push(CatalogItem {
                id: item_id(n),
                title: if title.is_empty() { format!("movie {n}") } else { title.to_string() },
                categories,
                language: None,
                duration_ms: None,
                release_year,
                popularity: 0.0,
                content_rating: None,
            });
        }

        let path = Path::new("ml-100k.inter");
        let (cols, rows) = read_table(inter_text, path)?;
        let (c_user, c_item, c_time) =
            (column(&cols, "user_id", path)?, column(&cols, "item_id", path)?, column(&cols, "timestamp", path)?);
        let mut by_user: HashMap<u32, Vec<(i64, u32)>> = HashMap::new();
        for row in &rows {
            let user: u32 = field(row, c_user, path)?.trim().parse().context("user id")?;
            let item: u32 = field(row, c_item, path)?.trim().parse().context("item id")?;
            let t: f64 = field(row, c_time, path)?.trim().parse().context("timestamp")?;
            if !(0.0..=LATEST_RATING_S).contains(&t) {
                bail!("{}: a timestamp is not a time from 1970 to 2100", path.display());
            }
            if !index.contains_key(&item) {
                bail!("{}: item {item} is not in the item file", path.display());
            }
            by_user.entry(user).or_default().push((t as i64, item));
        }
        let Some(newest) = by_user.values().flatten().map(|(t, _)| *t).max() else {
            bail!("{}: no ratings", path.display());
        };
        // Whole days keep each event's hour.
        let shift_ms = (now_ms - 2 * DAY_MS - newest * 1000).div_euclid(DAY_MS) * DAY_MS;

        let mut ids: Vec<u32> = by_user.keys().copied().collect();
        ids.sort_unstable();
        let mut users = Vec::with_capacity(ids.len());
        for id in ids {
            let mut seq = by_user.remove(&id).unwrap_or_default();
            seq.sort_unstable();
            let Some((t_test, test)) = seq.pop() else { continue };
            if seq.is_empty() {
                continue;
            }
            let mut events = Vec::with_capacity(seq.len());
            for &(t, item) in &seq {
                catalog[index[&item]].popularity += 1.0;
                events.push(Event {
                    item_id: item_id(item),
                    kind: EventKind::Play,
                    timestamp_ms: t * 1000 + shift_ms,
                    position_ms: None,
                    duration_ms: None,
                    context: EventContext { device: DeviceClass::Phone, local_hour: hour_of(t), locale: None },
                });
            }
            users.push(MlUser {
                events,
                held_out: item_id(test),
                context: RankContext { device: DeviceClass::Phone, local_hour: hour_of(t_test), locale: None },
            });
        }
        Ok(MovieLens { catalog, users, ratings: rows.len() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_rating_by_time_then_id_is_held_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ml-100k.item"),
            "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n\
             1\tToy Story\t1995\tAnimation Children's Comedy\n\
             2\tGoldenEye\t1995\tAction\n\
             10\tOdd\t\tunknown\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("ml-100k.inter"),
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n\
             1\t2\t3\t3600\n\
             1\t10\t5\t7200\n\
             1\t1\t4\t7200\n\
             2\t1\t2\t100\n\
             2\t2\t2\t200\n",
        )
        .unwrap();
        let now = 1_800_000_000_000;
        let ml = MovieLens::load(dir.path(), now).unwrap();
        assert_eq!(ml.ratings, 5);
        assert_eq!(ml.users.len(), 2);
        // A tie at 7200 goes to the higher MovieLens id (10 after 1).
        assert_eq!(ml.users[0].held_out, "movie:10");
        assert_eq!(ml.users[0].context.local_hour, 2);
        let ids: Vec<&str> = ml.users[0].events.iter().map(|e| e.item_id.as_str()).collect();
        assert_eq!(ids, ["movie:2", "movie:1"]);
        assert_eq!(ml.users[0].events[0].context.local_hour, 1);
        assert_eq!(ml.users[1].held_out, "movie:2");
        let newest = ml.users.iter().flat_map(|u| &u.events).map(|e| e.timestamp_ms).max().unwrap();
        assert!(newest <= now - 2 * DAY_MS && newest > now - 4 * DAY_MS, "{newest}");
        assert_eq!(newest % DAY_MS, 7200 * 1000 % DAY_MS, "whole days keep the hour");
        let pop: Vec<f64> = ml.catalog.iter().map(|c| c.popularity).collect();
        assert_eq!(pop, [2.0, 1.0, 0.0], "training interactions only");
        assert!(ml.catalog[2].categories.is_empty() && ml.catalog[2].release_year.is_none());
    }
}
