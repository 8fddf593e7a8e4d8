//! Order-keeping parallel map over scoped threads, for CPU-bound work on a few large
//! items (views of a study, studies of a data set). Small enough that a thread-pool
//! crate is not worth its build time.

/// Available cores (at least 1).
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Runs `f` over `items` on up to `threads` threads; results keep the input order.
/// A panic in `f` is propagated.
pub fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if threads <= 1 || items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| s.spawn(|| c.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order() {
        let v: Vec<u32> = (0..10).collect();
        assert_eq!(
            super::parallel_map(&v, 3, |x| x * 2),
            (0..10).map(|x| x * 2).collect::<Vec<_>>()
        );
    }
}
