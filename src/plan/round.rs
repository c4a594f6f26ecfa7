//! Exact weighted rounds.

/// One round: a sequence of indices into `weights` in which index `i` appears
/// `weights[i] / g` times (g = gcd of the weights), spread out evenly (smooth weighted
/// round robin), so that every `len` consecutive new connections split exactly by
/// weight.
pub fn weighted_round(weights: &[u32]) -> Vec<usize> {
    if weights.is_empty() {
        return Vec::new();
    }
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let w: Vec<i64> = weights.iter().map(|&x| (x / g).max(1) as i64).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, wi) in current.iter_mut().zip(&w) {
            *c += wi;
        }
        // Highest current wins; ties go to the lower index, for determinism.
        let best = (0..w.len())
            .max_by(|&a, &b| current[a].cmp(&current[b]).then(b.cmp(&a)))
            .expect("non-empty");
        current[best] -= total;
        order.push(best);
    }
    order
}

pub fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn weighted_round_examples() {
        assert_eq!(weighted_round(&[1, 1, 1]), vec![0, 1, 2]);
        assert_eq!(weighted_round(&[2, 1]), vec![0, 1, 0]);
        assert_eq!(weighted_round(&[4, 2]), vec![0, 1, 0]);
        assert_eq!(weighted_round(&[1, 3]), vec![1, 0, 1, 1]);
        assert!(weighted_round(&[]).is_empty());
    }

    proptest! {
        /// Each uplink appears exactly in proportion to its weight in one round.
        #[test]
        fn round_is_exact(weights in prop::collection::vec(1u32..=100, 1..8)) {
            let order = weighted_round(&weights);
            let g = weights.iter().copied().fold(0, gcd);
            prop_assert_eq!(order.len() as u32, weights.iter().map(|w| w / g).sum::<u32>());
            for (i, w) in weights.iter().enumerate() {
                prop_assert_eq!(order.iter().filter(|&&x| x == i).count() as u32, w / g);
            }
        }
    }
}
