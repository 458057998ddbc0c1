//! Who masks with whom: the coordinator's neighbour graph. SecAgg+ (Bell
//! et al., CCS 2020) replaces the complete graph of SecAgg with a sparse
//! random one of degree O(log n): here a Harary graph (the cohort on a
//! ring, each node joined to the k/2 nearest on either side) under a
//! uniformly random order of the cohort, drawn with the CSPRNG, so which
//! devices end up neighbours is unpredictable. A degree at or above n - 1
//! gives the complete graph.

use std::collections::BTreeMap;

use chacha20::ChaCha20Rng;

use crate::csprng;

/// Each node's neighbours (sorted, never the node itself), symmetric:
/// `b` is among `a`'s exactly when `a` is among `b`'s.
pub type Graph = BTreeMap<u64, Vec<u64>>;

/// A graph over `cohort` (distinct ids) where each node has `degree`
/// neighbours (rounded up to even), or all the others when there are
/// fewer.
pub fn harary(cohort: &[u64], degree: usize, rng: &mut ChaCha20Rng) -> Graph {
    let n = cohort.len();
    let mut order = cohort.to_vec();
    // Fisher-Yates with unbiased draws.
    for i in (1..n).rev() {
        let j = csprng::below(rng, i as u64 + 1) as usize;
        order.swap(i, j);
    }
    let half = degree.div_ceil(2);
    let mut graph = Graph::new();
    for (i, &node) in order.iter().enumerate() {
        let mut near: Vec<u64> = if 2 * half >= n.saturating_sub(1) {
            order.iter().copied().filter(|&other| other != node).collect()
        } else {
            (1..=half).flat_map(|d| [order[(i + d) % n], order[(i + n - d) % n]]).collect()
        };
        near.sort_unstable();
        graph.insert(node, near);
    }
    graph
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    #[test]
    fn the_graph_is_symmetric_regular_and_random() {
        let mut rng = ChaCha20Rng::from_seed([5; 32]);
        let cohort: Vec<u64> = (100..200).collect();
        let g = harary(&cohort, 10, &mut rng);
        assert_eq!(g.len(), 100);
        for (node, near) in &g {
            assert_eq!(near.len(), 10);
            assert!(!near.contains(node));
            for other in near {
                assert!(g[other].contains(node), "{node} and {other}");
            }
        }
        // Another draw gives another graph.
        assert_ne!(harary(&cohort, 10, &mut rng), g);
        // A degree of n - 1 or more is the complete graph.
        let small: Vec<u64> = (1..=12).collect();
        for near in harary(&small, 40, &mut rng).values() {
            assert_eq!(near.len(), 11);
        }
        // An odd degree is rounded up.
        assert!(harary(&cohort, 7, &mut rng).values().all(|near| near.len() == 8));
    }
}
