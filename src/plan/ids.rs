//! Stable uplink identity: an uplink keeps its id (and so its mark and table) while it
//! exists, across rebalances, nm-multiwan restarts and NetworkManager restarts, so that
//! no connection marked for it is ever rerouted into another uplink's table.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// What is known of ids already given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownIds {
    /// The kernel's evidence, freshest of all: interface -> id of the table of ours
    /// whose routes go through it.
    #[serde(skip)]
    pub kernel: BTreeMap<String, u32>,
    /// Our memory by NetworkManager connection UUID, which NetworkManager keeps across
    /// its restarts. Departed uplinks stay here, so that one that comes back gets its
    /// id again unless another needed it meanwhile.
    #[serde(default)]
    pub by_uuid: BTreeMap<String, u32>,
    /// Our memory by interface (for uplinks NetworkManager gives no UUID).
    #[serde(default)]
    pub by_iface: BTreeMap<String, u32>,
}

impl KnownIds {
    /// Records the ids of this plan's uplinks, forgetting whoever held them before.
    pub fn remember<'a>(&mut self, given: impl IntoIterator<Item = (&'a str, &'a str, u32)>) {
        for (iface, uuid, id) in given {
            self.by_uuid.retain(|u, i| *i != id || u == uuid);
            self.by_iface.retain(|f, i| *i != id || f == iface);
            if !uuid.is_empty() {
                self.by_uuid.insert(uuid.to_string(), id);
            }
            self.by_iface.insert(iface.to_string(), id);
        }
    }
}

/// Gives each candidate (interface, connection UUID) an id in 1..=max: the one the
/// kernel shows for its interface, else the one remembered for its UUID, else for its
/// interface; newcomers take the smallest id nobody holds or is remembered for, and
/// only when none is left, the smallest free one. Candidates beyond `max` get none.
pub fn assign<'a>(
    candidates: &[(&'a str, &'a str)],
    known: &KnownIds,
    max: u32,
) -> BTreeMap<&'a str, u32> {
    let mut taken = BTreeSet::new();
    let mut out = BTreeMap::new();
    let valid = |id: &u32| (1..=max).contains(id);
    // In rounds of decreasing confidence, so that fresh kernel evidence beats memory.
    type Source<'s> = &'s dyn Fn(&str, &str) -> Option<u32>;
    let sources: [Source; 3] = [
        &|iface, _| known.kernel.get(iface).copied(),
        &|_, uuid| known.by_uuid.get(uuid).copied(),
        &|iface, _| known.by_iface.get(iface).copied(),
    ];
    for source in sources {
        for &(iface, uuid) in candidates {
            if out.contains_key(iface) {
                continue;
            }
            if let Some(id) = source(iface, uuid).filter(valid)
                && taken.insert(id)
            {
                out.insert(iface, id);
            }
        }
    }
    let remembered: BTreeSet<u32> = known
        .by_uuid
        .values()
        .chain(known.by_iface.values())
        .copied()
        .collect();
    for &(iface, _) in candidates {
        if out.contains_key(iface) {
            continue;
        }
        let free = (1..=max)
            .find(|id| !taken.contains(id) && !remembered.contains(id))
            .or_else(|| (1..=max).find(|id| !taken.contains(id)));
        let Some(id) = free else { break };
        taken.insert(id);
        out.insert(iface, id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kernel_then_uuid_then_iface_then_fresh() {
        let known = KnownIds {
            kernel: BTreeMap::from([("eth0".into(), 3)]),
            by_uuid: BTreeMap::from([("u-wlan".into(), 2), ("u-gone".into(), 1)]),
            by_iface: BTreeMap::from([("usb0".into(), 5)]),
        };
        let ids = assign(
            &[
                ("eth0", "u-eth"),
                ("wlan1", "u-wlan"),
                ("usb0", "u-usb"),
                ("new0", "u-new"),
            ],
            &known,
            31,
        );
        // wlan1 is the same connection as before on a renamed interface: same id.
        assert_eq!(ids["eth0"], 3);
        assert_eq!(ids["wlan1"], 2);
        assert_eq!(ids["usb0"], 5);
        // 1 is remembered for a connection that may come back; 4 is free.
        assert_eq!(ids["new0"], 4);
    }

    #[test]
    fn remembered_ids_are_reused_only_when_nothing_else_is_free() {
        let known = KnownIds {
            by_uuid: BTreeMap::from([("a".into(), 1), ("b".into(), 2)]),
            ..KnownIds::default()
        };
        let ids = assign(&[("x", "x"), ("y", "y"), ("z", "z")], &known, 3);
        assert_eq!((ids["x"], ids["y"], ids["z"]), (3, 1, 2));
        let mut k = known.clone();
        k.remember([("x", "x", 1)]);
        assert!(!k.by_uuid.contains_key("a"), "a's id went to x");
        assert_eq!(k.by_uuid["x"], 1);
    }

    proptest! {
        /// Ids are unique and in range, whatever is remembered, and whoever the kernel
        /// or the memory names keeps its id when it is valid and unique.
        #[test]
        fn ids_are_unique_and_stable(
            ifaces in prop::collection::btree_set(0u8..12, 0..10),
            kernel in prop::collection::btree_map(0u8..12, 0u32..40, 0..10),
            uuids in prop::collection::btree_map(0u8..12, 0u32..40, 0..10),
        ) {
            let known = KnownIds {
                kernel: kernel.iter().map(|(i, id)| (format!("if{i}"), *id)).collect(),
                by_uuid: uuids.iter().map(|(i, id)| (format!("u{i}"), *id)).collect(),
                by_iface: BTreeMap::new(),
            };
            let names: Vec<(String, String)> = ifaces.iter().map(|i| (format!("if{i}"), format!("u{i}"))).collect();
            let cands: Vec<(&str, &str)> = names.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let ids = assign(&cands, &known, 31);
            let set: BTreeSet<u32> = ids.values().copied().collect();
            prop_assert_eq!(set.len(), ids.len());
            prop_assert!(set.iter().all(|i| (1..=31).contains(i)));
            prop_assert_eq!(ids.len(), cands.len());
            // A valid kernel id held by one interface only is kept.
            for (i, id) in &kernel {
                let dup = kernel.values().filter(|v| *v == id).count() > 1;
                if ifaces.contains(i) && (1..=31).contains(id) && !dup {
                    prop_assert_eq!(ids[format!("if{i}").as_str()], *id);
                }
            }
        }
    }
}
