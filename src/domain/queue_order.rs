//! Which queued build starts next across repositories, and where each queued build stands in line.
//!
//! A worker that is free starts one build. The builds it may start are the queued ones that
//! - own their tag ([`tag_owner::may_start`]: no build of the same tag runs or waits ahead of them), and
//! - belong to a repository running fewer builds than the per-repository limit.
//!
//! Among those it is fair between repositories: it picks the repository whose latest build started
//! longest ago (a repository that never started one comes first), then that repository's oldest build
//! that may start. One busy repository therefore cannot starve the others: each repository with
//! something waiting takes its turn (round robin by start time). Ties go to the oldest build.
//!
//! `db::builds::claim_next` is [`next_to_start`] as one SQL statement; a test checks that the two agree.

use std::collections::BTreeMap;

use super::tag_owner::{self, Stage};

/// One build, as the queue sees it: its repository, when it last started, and its tag and stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Build<'a> {
    pub repo: &'a str,
    /// When it (last) started; None while it never has. Timestamps sort as text (RFC 3339, fixed width).
    pub started_at: Option<&'a str>,
    pub owner: tag_owner::Build<'a>,
}

/// When a repository last started a build. Derived order: never < a real time < a time the simulation
/// in [`queue_positions`] gives (later than any real one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Start<'a> {
    Never,
    At(&'a str),
    Later(usize),
}

#[derive(Debug, Clone, Copy)]
struct Entry<'a> {
    start: Start<'a>,
    owner: tag_owner::Build<'a>,
}

/// Builds grouped by repository, each group in queue (id) order.
type Repos<'a> = BTreeMap<&'a str, Vec<Entry<'a>>>;

fn group<'a>(builds: &[Build<'a>]) -> Repos<'a> {
    let mut repos: Repos<'a> = BTreeMap::new();
    for b in builds {
        repos.entry(b.repo).or_default().push(Entry {
            start: b.started_at.map_or(Start::Never, Start::At),
            owner: b.owner,
        });
    }
    for entries in repos.values_mut() {
        entries.sort_by_key(|e| e.owner.id);
    }
    repos
}

/// The build a free worker starts: (repository, index in its group).
fn pick<'a>(repos: &Repos<'a>, repo_limit: usize) -> Option<(&'a str, usize)> {
    let mut best: Option<((Start<'a>, &'a str), &'a str, usize)> = None;
    for (&repo, entries) in repos {
        let running = entries
            .iter()
            .filter(|e| e.owner.stage == Stage::Building)
            .count();
        if running >= repo_limit {
            continue;
        }
        let last = entries
            .iter()
            .map(|e| e.start)
            .max()
            .unwrap_or(Start::Never);
        let owners: Vec<tag_owner::Build<'a>> = entries.iter().map(|e| e.owner).collect();
        // In id order: the first that may start is the repository's oldest that may.
        if let Some(i) = owners.iter().position(|o| tag_owner::may_start(o, &owners)) {
            let key = (last, owners[i].id);
            if best.is_none_or(|(k, _, _)| key < k) {
                best = Some((key, repo, i));
            }
        }
    }
    best.map(|(_, repo, i)| (repo, i))
}

/// The queued build a free worker starts now, among all builds of all repositories (any stage: the
/// finished ones tell when each repository last started one). None when nothing may start.
pub fn next_to_start<'a>(builds: &[Build<'a>], repo_limit: usize) -> Option<&'a str> {
    let repos = group(builds);
    pick(&repos, repo_limit).map(|(repo, i)| repos[repo][i].owner.id)
}

/// Each queued build's place in line (1 = the next to start), in that order: the order in which they
/// would start if running builds ended one at a time, oldest start first, whenever nothing else may
/// start. A build that can never start (none here: each wait ends with a running build) gets no place.
pub fn queue_positions<'a>(builds: &[Build<'a>], repo_limit: usize) -> Vec<(&'a str, usize)> {
    let mut repos = group(builds);
    let mut order = Vec::new();
    let mut clock = 0;
    loop {
        if let Some((repo, i)) = pick(&repos, repo_limit) {
            let e = &mut repos.get_mut(repo).expect("picked repo")[i];
            order.push((e.owner.id, order.len() + 1));
            e.owner.stage = Stage::Building;
            e.start = Start::Later(clock);
            clock += 1;
            continue;
        }
        // Nothing may start: the running build that started first ends (it frees its tag and a slot).
        let oldest = repos
            .iter()
            .flat_map(|(&repo, entries)| {
                entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.owner.stage == Stage::Building)
                    .map(move |(i, e)| ((e.start, e.owner.id), repo, i))
            })
            .min();
        match oldest {
            Some((_, repo, i)) => {
                repos.get_mut(repo).expect("running repo")[i].owner.stage = Stage::Ended
            }
            None => return order,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Stage::*;

    fn b<'a>(
        repo: &'a str,
        id: &'a str,
        tag: Option<&'a str>,
        stage: Stage,
        started_at: Option<&'a str>,
    ) -> Build<'a> {
        Build {
            repo,
            started_at,
            owner: tag_owner::Build {
                id,
                rule_id: Some("r"),
                tag,
                stage,
            },
        }
    }

    const T1: Option<&str> = Some("2026-01-01T00:00:01.000000Z");
    const T2: Option<&str> = Some("2026-01-01T00:00:02.000000Z");
    const T3: Option<&str> = Some("2026-01-01T00:00:03.000000Z");

    #[test]
    fn next_to_start_cases() {
        let cases: Vec<(&str, Vec<Build>, usize, Option<&str>)> = vec![
            ("empty", vec![], 1, None),
            (
                "one queued",
                vec![b("A", "1", Some("x"), Queued, None)],
                1,
                Some("1"),
            ),
            (
                "the repository that never started a build goes before an older queued build",
                vec![
                    b("A", "0", Some("x"), Succeeded, T1),
                    b("A", "1", Some("x"), Queued, None),
                    b("A", "2", Some("y"), Queued, None),
                    b("B", "3", Some("x"), Queued, None),
                ],
                1,
                Some("3"),
            ),
            (
                "the repository whose last start is oldest goes first",
                vec![
                    b("A", "0", Some("x"), Succeeded, T2),
                    b("B", "1", Some("x"), Ended, T1),
                    b("A", "2", Some("x"), Queued, None),
                    b("B", "3", Some("x"), Queued, None),
                ],
                1,
                Some("3"),
            ),
            (
                "a finished build's start counts, not only running ones",
                vec![
                    b("A", "0", Some("x"), Ended, T3),
                    b("B", "1", Some("x"), Succeeded, T2),
                    b("A", "2", Some("y"), Queued, None),
                    b("B", "3", Some("y"), Queued, None),
                ],
                1,
                Some("3"),
            ),
            (
                "a repository at its limit waits",
                vec![
                    b("A", "0", Some("x"), Building, T1),
                    b("A", "1", Some("y"), Queued, None),
                ],
                1,
                None,
            ),
            (
                "below a higher limit it may start a second build",
                vec![
                    b("A", "0", Some("x"), Building, T1),
                    b("A", "1", Some("y"), Queued, None),
                ],
                2,
                Some("1"),
            ),
            (
                "a repository at its limit lets another go even when it started longer ago",
                vec![
                    b("A", "0", Some("x"), Building, T1),
                    b("B", "1", Some("x"), Succeeded, T3),
                    b("A", "2", Some("y"), Queued, None),
                    b("B", "3", Some("x"), Queued, None),
                ],
                1,
                Some("3"),
            ),
            (
                "the tag rule still holds: a build of a running tag is skipped for the next",
                vec![
                    b("A", "0", Some("x"), Building, T1),
                    b("A", "1", Some("x"), Queued, None),
                    b("A", "2", Some("y"), Queued, None),
                ],
                2,
                Some("2"),
            ),
            (
                "ties between repositories that never started go to the oldest build",
                vec![
                    b("B", "2", Some("x"), Queued, None),
                    b("A", "5", Some("x"), Queued, None),
                ],
                1,
                Some("2"),
            ),
        ];
        for (name, builds, limit, want) in cases {
            assert_eq!(next_to_start(&builds, limit), want, "{name}");
        }
    }

    fn positions<'a>(builds: &[Build<'a>], limit: usize) -> Vec<&'a str> {
        let p = queue_positions(builds, limit);
        for (i, (_, n)) in p.iter().enumerate() {
            assert_eq!(*n, i + 1);
        }
        p.into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn repositories_take_turns() {
        // A queued three builds before B queued three; none ever ran.
        let builds = [
            b("A", "1", Some("a1"), Queued, None),
            b("A", "2", Some("a2"), Queued, None),
            b("A", "3", Some("a3"), Queued, None),
            b("B", "4", Some("b1"), Queued, None),
            b("B", "5", Some("b2"), Queued, None),
            b("B", "6", Some("b3"), Queued, None),
        ];
        assert_eq!(positions(&builds, 1), ["1", "4", "2", "5", "3", "6"]);
        // With room for everything, the order stays fair.
        assert_eq!(positions(&builds, 3), ["1", "4", "2", "5", "3", "6"]);
    }

    #[test]
    fn a_late_repository_does_not_wait_for_a_busy_ones_queue() {
        // A runs one build and has nine more queued; B queues one after all of them.
        let mut builds = vec![b("A", "00", Some("a0"), Building, T1)];
        let ids = ["01", "02", "03", "04", "05", "06", "07", "08", "09"];
        let tags = ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9"];
        for (id, tag) in ids.iter().zip(tags) {
            builds.push(b("A", id, Some(tag), Queued, None));
        }
        builds.push(b("B", "10", Some("b"), Queued, None));
        assert_eq!(next_to_start(&builds, 1), Some("10"));
        let order = positions(&builds, 1);
        assert_eq!(order[0], "10");
        assert_eq!(order[1..], ids);
    }

    #[test]
    fn positions_follow_the_tag_rule_and_the_limit() {
        let builds = [
            b("A", "0", Some("x"), Building, T1),
            b("A", "1", Some("x"), Queued, None),
            b("A", "2", Some("y"), Queued, None),
            b("B", "3", Some("x"), Queued, None),
        ];
        // Limit 1: B first (A is full); then A in queue order once its running build ends.
        assert_eq!(positions(&builds, 1), ["3", "1", "2"]);
        // Limit 2: A's :y may start beside the running :x, B has never started so goes first.
        assert_eq!(positions(&builds, 2), ["3", "2", "1"]);
        // Builds of one tag keep their order whatever the limit.
        let builds = [
            b("A", "1", Some("x"), Queued, None),
            b("A", "2", Some("x"), Queued, None),
            b("A", "3", Some("x"), Queued, None),
        ];
        assert_eq!(positions(&builds, 5), ["1", "2", "3"]);
        // Nothing queued: no places.
        assert!(queue_positions(&[b("A", "1", Some("x"), Building, T1)], 1).is_empty());
    }

    #[test]
    fn the_first_place_is_what_a_free_worker_starts() {
        let builds = [
            b("A", "0", Some("x"), Succeeded, T2),
            b("B", "1", Some("x"), Ended, T1),
            b("A", "2", None, Queued, None),
            b("B", "3", Some("y"), Queued, None),
            b("C", "4", Some("z"), Building, T3),
            b("C", "5", Some("w"), Queued, None),
        ];
        for limit in 1..4 {
            let first = queue_positions(&builds, limit).first().map(|(id, _)| *id);
            assert_eq!(first, next_to_start(&builds, limit), "limit {limit}");
        }
    }
}
