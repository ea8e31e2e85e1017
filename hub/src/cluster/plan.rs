//! The pure decisions of cluster mode: which partition a resident belongs to, and which
//! partitions a hub should claim or give up, from one reading of the lease table.

use crate::store::cluster::{ClusterView, LeaseRow};

/// The partition of a resident: a function of the resident id alone, so every hub's
/// edge writes a resident's events to the same place.
pub fn partition_of(resident_id: i64, partitions: u32) -> u32 {
    u32::try_from(resident_id.rem_euclid(i64::from(partitions.max(1)))).unwrap_or(0)
}

/// What a hub should do with the leases now.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Free or expired partitions to take, best first.
    pub claim: Vec<u32>,
    /// Partitions held beyond this hub's fair share, to hand over.
    pub release: Vec<u32>,
}

/// The hubs that reported within `node_ttl_ms`, sorted, always including `me`.
pub fn alive_nodes(view: &ClusterView, me: &str, node_ttl_ms: i64) -> Vec<String> {
    let mut alive: Vec<String> = view
        .nodes
        .iter()
        .filter(|n| n.last_seen >= view.now_ms - node_ttl_ms)
        .map(|n| n.node_id.clone())
        .collect();
    if !alive.iter().any(|n| n == me) {
        alive.push(me.to_string());
    }
    alive.sort();
    alive
}

/// This hub's fair share: the partitions spread evenly, the first hubs by name taking one
/// more when they do not divide.
pub fn fair_share(partitions: usize, alive: &[String], me: &str) -> usize {
    let n = alive.len().max(1);
    let idx = alive.iter().position(|a| a == me).unwrap_or(0);
    partitions / n + usize::from(idx < partitions % n)
}

/// Claims free partitions up to the fair share; when nothing is free, gives up what is
/// held beyond it, so a hub that joins gets its share from the others.
pub fn plan(me: &str, alive: &[String], leases: &[LeaseRow], now_ms: i64) -> Plan {
    let target = fair_share(leases.len(), alive, me);
    let held = |l: &&LeaseRow| l.expires_at >= now_ms && l.owner.is_some();
    let mine: Vec<&LeaseRow> = leases
        .iter()
        .filter(held)
        .filter(|l| l.owner.as_deref() == Some(me))
        .collect();
    let free: Vec<&LeaseRow> = leases.iter().filter(|l| !held(l)).collect();
    let n = alive.len().max(1);
    let idx = alive.iter().position(|a| a == me).unwrap_or(0);
    let home = |l: &&LeaseRow| usize::try_from(l.part).unwrap_or(0) % n == idx;
    let mut plan = Plan::default();
    if mine.len() < target {
        // A hub's "home" partitions first, so hubs starting together rarely race for one.
        let mut order: Vec<&LeaseRow> = free.iter().copied().filter(home).collect();
        order.extend(free.iter().copied().filter(|l| !home(l)));
        plan.claim = order
            .into_iter()
            .take(target - mine.len())
            .filter_map(|l| u32::try_from(l.part).ok())
            .collect();
    } else if mine.len() > target && free.is_empty() {
        let mut order: Vec<&LeaseRow> = mine.iter().copied().filter(|l| !home(l)).collect();
        order.extend(mine.iter().copied().filter(home));
        plan.release = order
            .into_iter()
            .take(mine.len() - target)
            .filter_map(|l| u32::try_from(l.part).ok())
            .collect();
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(part: i64, owner: Option<&str>, expires_at: i64) -> LeaseRow {
        LeaseRow {
            part,
            owner: owner.map(str::to_string),
            token: 1,
            expires_at,
            applied_seq: 0,
        }
    }

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_resident_always_lands_in_the_same_partition() {
        assert_eq!(partition_of(17, 16), 1);
        assert_eq!(partition_of(-3, 16), 13);
        assert_eq!(partition_of(5, 0), 0);
    }

    #[test]
    fn three_hubs_starting_together_split_sixteen_partitions_six_five_five() {
        let alive = nodes(&["hub-1", "hub-2", "hub-3"]);
        let leases: Vec<LeaseRow> = (0..16).map(|p| lease(p, None, 0)).collect();
        let shares: Vec<usize> = alive
            .iter()
            .map(|me| plan(me, &alive, &leases, 1000).claim.len())
            .collect();
        assert_eq!(shares, vec![6, 5, 5]);
        let first = plan("hub-1", &alive, &leases, 1000).claim;
        assert!(
            first.iter().take(6).all(|p| p % 3 == 0),
            "home partitions first: {first:?}"
        );
    }

    #[test]
    fn expired_leases_of_a_dead_hub_are_taken_by_the_survivors() {
        let alive = nodes(&["hub-1", "hub-2"]);
        let mut leases: Vec<LeaseRow> = (0..4).map(|p| lease(p, Some("hub-1"), 5000)).collect();
        leases.extend((4..8).map(|p| lease(p, Some("hub-3"), 900)));
        let p = plan("hub-2", &alive, &leases, 1000);
        assert_eq!(p.claim, vec![5, 7, 4, 6]);
        assert!(p.release.is_empty());
    }

    #[test]
    fn a_hub_over_its_share_hands_partitions_to_a_newcomer_only_when_none_are_free() {
        let alive = nodes(&["hub-1", "hub-2"]);
        let leases: Vec<LeaseRow> = (0..4).map(|p| lease(p, Some("hub-1"), 5000)).collect();
        let p = plan("hub-1", &alive, &leases, 1000);
        assert_eq!(p.release, vec![1, 3]);
        let mut with_free = leases.clone();
        with_free[0] = lease(0, None, 0);
        assert!(plan("hub-1", &alive, &with_free, 1000).release.is_empty());
        assert_eq!(plan("hub-2", &alive, &with_free, 1000).claim, vec![0]);
    }

    #[test]
    fn a_hub_at_its_share_does_nothing() {
        let alive = nodes(&["a", "b"]);
        let leases = vec![lease(0, Some("a"), 5000), lease(1, Some("b"), 5000)];
        assert_eq!(plan("a", &alive, &leases, 1000), Plan::default());
    }
}
