//! The local cache cap: which cached items (images kiln built, mirrors of deleted sources) to remove so
//! that what is left fits under the cap, oldest first, never one in use.

/// One item of the local cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheItem {
    pub bytes: u64,
    /// When it was made or last used (Unix seconds): the oldest goes first.
    pub last_used: i64,
    /// In use by a running build: never removed (its bytes still count).
    pub in_use: bool,
}

/// The indices of `items` to remove, in removal order (oldest first, ties in list order), until the
/// total is at most `cap`. A cap of zero is no cap. When the items in use alone exceed the cap,
/// everything else goes and the total stays above it.
pub fn select_to_prune(items: &[CacheItem], cap: u64) -> Vec<usize> {
    if cap == 0 {
        return vec![];
    }
    let mut total: u64 = items.iter().map(|i| i.bytes).fold(0, u64::saturating_add);
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| (items[i].last_used, i));
    let mut out = Vec::new();
    for i in order {
        if total <= cap {
            break;
        }
        if items[i].in_use {
            continue;
        }
        total -= items[i].bytes;
        out.push(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(bytes: u64, last_used: i64) -> CacheItem {
        CacheItem {
            bytes,
            last_used,
            in_use: false,
        }
    }

    #[test]
    fn oldest_first_until_under_the_cap() {
        let busy = CacheItem {
            in_use: true,
            ..item(50, 1)
        };
        // (items, cap, indices removed)
        let cases: Vec<(Vec<CacheItem>, u64, Vec<usize>)> = vec![
            (vec![], 10, vec![]),
            (vec![item(10, 1)], 10, vec![]),
            (vec![item(10, 1)], 9, vec![0]),
            (vec![item(10, 3), item(10, 1), item(10, 2)], 15, vec![1, 2]),
            (vec![item(10, 3), item(10, 1), item(10, 2)], 30, vec![]),
            (vec![item(10, 3), item(10, 1), item(10, 2)], 0, vec![]),
            // Same age: list order.
            (vec![item(10, 1), item(10, 1)], 10, vec![0]),
            // One big old item is enough.
            (vec![item(100, 1), item(10, 2), item(10, 3)], 50, vec![0]),
            // In use: skipped, still counted.
            (vec![busy, item(10, 2), item(10, 3)], 60, vec![1]),
            (vec![busy, item(10, 2), item(10, 3)], 10, vec![1, 2]),
            (vec![item(u64::MAX, 1), item(u64::MAX, 2)], 1, vec![0]),
        ];
        for (items, cap, want) in cases {
            assert_eq!(select_to_prune(&items, cap), want, "{items:?} cap {cap}");
        }
    }
}
