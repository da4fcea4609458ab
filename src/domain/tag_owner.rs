//! A tag has one owner at a time: which queued build may start, and whether a finished build may still
//! move its tag.
//!
//! Builds of one repository that would push the same image tag never run at the same time and start in
//! queue order (ids sort by creation: push order). A build whose tag is not known yet (a "build now"
//! of a branch head or of the newest tag, resolved when it runs) may push any tag its rule makes, so it
//! conflicts with every build of that rule. `db::builds::claim_next` is this rule as one SQL statement;
//! a test checks that the two agree.

/// Where a build is in its life, as far as owning a tag goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Queued,
    Building,
    Succeeded,
    /// Failed or cancelled: it pushed nothing and never will.
    Ended,
}

/// One build of a repository, as the tag rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Build<'a> {
    /// Sorts by queue order.
    pub id: &'a str,
    pub rule_id: Option<&'a str>,
    /// None until known.
    pub tag: Option<&'a str>,
    pub stage: Stage,
}

/// Could these two builds push the same tag?
pub fn same_tag(a: &Build, b: &Build) -> bool {
    match (a.tag, b.tag) {
        (Some(x), Some(y)) => x == y,
        _ => a.rule_id.is_some() && a.rule_id == b.rule_id,
    }
}

/// May `candidate` (queued) start now, given the repository's other builds? Not while a build of the
/// same tag runs, nor while one queued before it waits.
pub fn may_start(candidate: &Build, others: &[Build]) -> bool {
    candidate.stage == Stage::Queued
        && !others.iter().any(|o| {
            o.id != candidate.id
                && same_tag(candidate, o)
                && (o.stage == Stage::Building || (o.stage == Stage::Queued && o.id < candidate.id))
        })
}

/// The queued build to start next among one repository's builds: the oldest that may start.
pub fn next_to_start<'a>(builds: &[Build<'a>]) -> Option<&'a str> {
    builds
        .iter()
        .filter(|b| may_start(b, builds))
        .map(|b| b.id)
        .min()
}

/// When `finished` (built, about to push `tag`) is no longer the newest build of its tag, the newest one
/// that is: queued after it and not failed. Such a build would move the tag back to an older commit if
/// it pushed, so it does not.
pub fn newer_owner<'a>(finished: &Build, tag: &str, others: &[Build<'a>]) -> Option<&'a str> {
    others
        .iter()
        .filter(|o| o.id > finished.id && o.tag == Some(tag) && o.stage != Stage::Ended)
        .map(|o| o.id)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b<'a>(id: &'a str, rule: Option<&'a str>, tag: Option<&'a str>, stage: Stage) -> Build<'a> {
        Build {
            id,
            rule_id: rule,
            tag,
            stage,
        }
    }

    use Stage::*;

    #[test]
    fn same_tag_cases() {
        let cases = [
            // (a, b, same?)
            (
                b("1", Some("r"), Some("main"), Queued),
                b("2", Some("r"), Some("main"), Queued),
                true,
            ),
            (
                b("1", Some("r"), Some("main"), Queued),
                b("2", Some("r"), Some("dev"), Queued),
                false,
            ),
            // Two rules pushing the same tag still share it.
            (
                b("1", Some("r"), Some("main"), Queued),
                b("2", Some("s"), Some("main"), Queued),
                true,
            ),
            // Unknown tag: every tag of its rule.
            (
                b("1", Some("r"), None, Queued),
                b("2", Some("r"), Some("main"), Queued),
                true,
            ),
            (
                b("1", Some("r"), None, Queued),
                b("2", Some("s"), Some("main"), Queued),
                false,
            ),
            (
                b("1", None, None, Queued),
                b("2", None, None, Queued),
                false,
            ),
            (
                b("1", Some("r"), None, Queued),
                b("2", Some("r"), None, Queued),
                true,
            ),
        ];
        for (x, y, want) in cases {
            assert_eq!(same_tag(&x, &y), want, "{x:?} {y:?}");
            assert_eq!(same_tag(&y, &x), want, "{y:?} {x:?} (symmetric)");
        }
    }

    #[test]
    fn builds_of_one_tag_start_one_at_a_time_in_queue_order() {
        // A builds :main; B and C queued for :main; D queued for :dev.
        let builds = [
            b("a", Some("r"), Some("main"), Building),
            b("b", Some("r"), Some("main"), Queued),
            b("c", Some("r"), Some("main"), Queued),
            b("d", Some("r"), Some("dev"), Queued),
        ];
        assert!(!may_start(&builds[1], &builds), "A runs");
        assert!(!may_start(&builds[2], &builds), "A runs and B is ahead");
        assert!(may_start(&builds[3], &builds), "other tag");
        assert!(!may_start(&builds[0], &builds), "not queued");
        assert_eq!(next_to_start(&builds), Some("d"));

        // A ended: B, not C, goes next.
        let builds = [
            b("a", Some("r"), Some("main"), Succeeded),
            b("b", Some("r"), Some("main"), Queued),
            b("c", Some("r"), Some("main"), Queued),
        ];
        assert_eq!(next_to_start(&builds), Some("b"));
        // B cancelled (superseded): C.
        let builds = [
            b("a", Some("r"), Some("main"), Ended),
            b("b", Some("r"), Some("main"), Ended),
            b("c", Some("r"), Some("main"), Queued),
        ];
        assert_eq!(next_to_start(&builds), Some("c"));
        assert_eq!(next_to_start(&[]), None);
    }

    #[test]
    fn build_now_waits_for_its_rule() {
        let builds = [
            b("a", Some("r"), Some("main"), Building),
            b("b", Some("r"), None, Queued),
            b("c", Some("s"), None, Queued),
        ];
        assert_eq!(next_to_start(&builds), Some("c"));
        let builds = [
            b("a", Some("r"), None, Building),
            b("b", Some("r"), Some("v1"), Queued),
        ];
        assert_eq!(next_to_start(&builds), None);
    }

    #[test]
    fn only_the_newest_build_moves_a_tag() {
        let a = b("a", Some("r"), Some("main"), Building);
        for (others, want) in [
            (vec![], None),
            (vec![b("b", Some("r"), Some("main"), Queued)], Some("b")),
            (vec![b("b", Some("r"), Some("main"), Succeeded)], Some("b")),
            (vec![b("b", Some("r"), Some("main"), Ended)], None),
            (vec![b("b", Some("r"), Some("dev"), Queued)], None),
            // Older builds never take a tag from a newer one.
            (vec![b("0", Some("r"), Some("main"), Succeeded)], None),
            (
                vec![
                    b("b", Some("r"), Some("main"), Queued),
                    b("c", Some("r"), Some("main"), Queued),
                ],
                Some("c"),
            ),
        ] {
            assert_eq!(newer_owner(&a, "main", &others), want, "{others:?}");
        }
    }
}
