//! Where an agent should run: rendezvous (highest-random-weight) hashing over the live nodes.
//!
//! Every node computes the same answer from the same membership, with no table to agree on:
//! an agent goes to the node with the highest `hash(node, agent)`. When a node leaves only its
//! agents move (each to its own next-highest node, so they spread over the survivors); when a
//! node joins it takes about `1/n` of the agents, from every node. Two nodes with different
//! views of the membership may both think an agent is theirs for a moment; the lease decides
//! (only one claim succeeds), so placement needs no consensus of its own.

/// The node `agent` belongs on among `nodes` (`None` when there are none).
///
/// ```ignore
/// let nodes = ["a".to_string(), "b".to_string()];
/// assert!(place("kv-1", &nodes).is_some());
/// ```
pub(crate) fn place<'a>(agent: &str, nodes: &'a [String]) -> Option<&'a str> {
    nodes
        .iter()
        .max_by_key(|node| (weight(node, agent), node.as_str()))
        .map(String::as_str)
}

fn weight(node: &str, agent: &str) -> u64 {
    let mut hasher = blake3::Hasher::new();
    // Length-prefixed, so ("ab", "c") and ("a", "bc") hash apart.
    hasher.update(&(node.len() as u64).to_le_bytes());
    hasher.update(node.as_bytes());
    hasher.update(agent.as_bytes());
    let hash = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::place;
    use std::collections::BTreeMap;

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    fn spread(agents: usize, nodes: &[String]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for i in 0..agents {
            let node = place(&format!("agent-{i}"), nodes).expect("a node");
            *counts.entry(node.to_string()).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn no_nodes_no_place() {
        assert_eq!(place("a", &[]), None);
    }

    #[test]
    fn agents_spread_evenly() {
        let counts = spread(3000, &nodes(3));
        assert_eq!(counts.len(), 3);
        for (node, count) in counts {
            assert!((850..=1150).contains(&count), "{node}: {count} of 3000");
        }
    }

    #[test]
    fn a_node_leaving_moves_only_its_agents() {
        let all = nodes(3);
        let survivors: Vec<String> = all.iter().filter(|n| *n != "node-1").cloned().collect();
        for i in 0..2000 {
            let agent = format!("agent-{i}");
            let before = place(&agent, &all).expect("a node");
            let after = place(&agent, &survivors).expect("a node");
            if before != "node-1" {
                assert_eq!(before, after, "{agent} moved though its node stayed");
            }
        }
    }

    #[test]
    fn a_node_joining_takes_a_fair_share_and_nothing_moves_elsewhere() {
        let before_nodes = nodes(3);
        let after_nodes = nodes(4);
        let mut moved = 0;
        for i in 0..4000 {
            let agent = format!("agent-{i}");
            let before = place(&agent, &before_nodes).expect("a node");
            let after = place(&agent, &after_nodes).expect("a node");
            if before != after {
                assert_eq!(after, "node-3", "{agent} moved between old nodes");
                moved += 1;
            }
        }
        assert!((800..=1200).contains(&moved), "{moved} of 4000 moved");
    }

    #[test]
    fn order_of_the_membership_does_not_matter() {
        let mut shuffled = nodes(5);
        shuffled.reverse();
        for i in 0..500 {
            let agent = format!("agent-{i}");
            assert_eq!(place(&agent, &nodes(5)), place(&agent, &shuffled));
        }
    }
}
