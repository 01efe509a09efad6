//! IP classes: which of the cluster's distinct ipBlocks an address falls in
//! (and, inside each, which exception if any), interned to a `u32`. A verdict
//! depends on an address only through its class, so the class keys the verdict
//! cache next to the identities. The ipBlocks (and admin policies' `networks`,
//! as ipBlocks without exceptions) are counted by the policy peers
//! that use them; when the set changes, every class is recomputed.

use std::net::IpAddr;

use rustc_hash::FxHashMap;

use crate::model::IpBlock;

/// The IP class of addresses whose ipBlock membership was never interned.
pub(crate) const UNCACHED_CLASS: u32 = u32::MAX;

/// The cluster's ipBlocks and the interned classes.
#[derive(Clone, Debug)]
pub(crate) struct IpClasses {
    /// Distinct ipBlocks of all policies, with the number of peers using each.
    blocks: Vec<(IpBlock, usize)>,
    /// Class ids by membership (see [`IpClasses::members`]).
    ids: FxHashMap<Vec<u32>, u32>,
}

impl Default for IpClasses {
    fn default() -> Self {
        IpClasses {
            blocks: Vec::new(),
            // The class of addresses in no ipBlock: the common case for external IPs.
            ids: FxHashMap::from_iter([(Vec::new(), 0)]),
        }
    }
}

impl IpClasses {
    /// Counts the ipBlocks of a policy being added (a NetworkPolicy's
    /// ipBlocks, an admin policy's networks); returns whether the set of
    /// blocks changed (then every class must be recomputed).
    pub fn add_blocks<'a>(&mut self, blocks: impl IntoIterator<Item = &'a IpBlock>) -> bool {
        let mut changed = false;
        for block in blocks {
            match self.blocks.iter_mut().find(|(b, _)| b == block) {
                Some((_, uses)) => {
                    if *uses == 0 {
                        changed = true;
                    }
                    *uses += 1;
                }
                None => {
                    self.blocks.push((block.clone(), 1));
                    changed = true;
                }
            }
        }
        changed
    }

    /// Uncounts the ipBlocks of a policy being removed; returns whether the
    /// set of blocks changed.
    pub fn remove_blocks<'a>(&mut self, blocks: impl IntoIterator<Item = &'a IpBlock>) -> bool {
        let mut changed = false;
        for block in blocks {
            if let Some((_, uses)) = self.blocks.iter_mut().find(|(b, _)| b == block) {
                *uses = uses.saturating_sub(1);
                changed |= *uses == 0;
            }
        }
        if changed {
            self.blocks.retain(|(_, uses)| *uses > 0);
        }
        changed
    }

    /// Forgets every class (the blocks stay): addresses are interned again.
    pub fn reset(&mut self) {
        self.ids.clear();
        self.ids.insert(Vec::new(), 0);
    }

    /// The class of `ip`, interned on first sight.
    pub fn intern(&mut self, ip: IpAddr) -> u32 {
        let members = self.members(ip);
        let next = self.ids.len() as u32;
        *self.ids.entry(members).or_insert(next)
    }

    /// The class of `ip` if it was interned, else [`UNCACHED_CLASS`] (rare: an
    /// external IP inside some ipBlocks; verdicts for it are not cached).
    pub fn lookup(&self, ip: IpAddr) -> u32 {
        self.ids
            .get(&self.members(ip))
            .copied()
            .unwrap_or(UNCACHED_CLASS)
    }

    /// The ipBlocks whose CIDR holds `ip`, each followed by 0 when the block
    /// admits it or by 1 + the index of the first exception holding it: verdicts
    /// (and the misses they explain) depend on no more than this.
    fn members(&self, ip: IpAddr) -> Vec<u32> {
        let mut members = Vec::new();
        for (i, (block, uses)) in self.blocks.iter().enumerate() {
            if *uses > 0 && block.cidr.contains(&ip) {
                let except = block.except.iter().position(|e| e.contains(&ip));
                members.push(i as u32);
                members.push(except.map_or(0, |e| e as u32 + 1));
            }
        }
        members
    }
}
