//! The part of the kernel that is ours: mark bits, routing table numbers and `ip rule`
//! priorities. Every encoding and decoding of a mark goes through here.
//!
//! Marks: the mask's top bit flags a connection that came *in* through an uplink; the
//! bits below it hold the uplink's id (1 ..= max_uplinks; 0 means "not ours").

use serde::{Deserialize, Serialize};

/// How many consecutive `ip rule` priorities we use, from `rule_priority` on.
pub const RULE_PRIORITIES: u32 = 3;

/// The kernel's main routing table.
pub const MAIN_TABLE: u32 = 254;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub mark_mask: u32,
    pub table_base: u32,
    pub rule_priority: u32,
}

/// A mark of ours, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub id: u32,
    pub inbound: bool,
}

impl Namespace {
    /// Bit position of the id field.
    pub fn shift(&self) -> u32 {
        self.mark_mask.trailing_zeros()
    }

    /// The mask's top bit.
    pub fn inbound_flag(&self) -> u32 {
        1 << (31 - self.mark_mask.leading_zeros())
    }

    /// The id field: the mask without the inbound flag.
    pub fn id_mask(&self) -> u32 {
        self.mark_mask & !self.inbound_flag()
    }

    pub fn max_uplinks(&self) -> u32 {
        (1u32 << (self.mark_mask.count_ones() - 1)) - 1
    }

    /// Mark given to connections we send out through uplink `id`.
    pub fn mark(&self, id: u32) -> u32 {
        (id << self.shift()) & self.id_mask()
    }

    /// Mark given to connections that came in through uplink `id`.
    pub fn inbound_mark(&self, id: u32) -> u32 {
        self.mark(id) | self.inbound_flag()
    }

    /// Our part of a packet or connection mark; `None` when it carries no id of ours.
    pub fn decode(&self, mark: u32) -> Option<Mark> {
        let id = (mark & self.id_mask()) >> self.shift();
        (id != 0).then_some(Mark {
            id,
            inbound: mark & self.inbound_flag() != 0,
        })
    }

    pub fn table(&self, id: u32) -> u32 {
        self.table_base + id
    }

    /// The uplink id a table of ours belongs to.
    pub fn id_of_table(&self, table: u32) -> Option<u32> {
        let id = table.checked_sub(self.table_base)?;
        (1..=self.max_uplinks()).contains(&id).then_some(id)
    }

    /// Rule priorities, in the order the kernel consults them.
    pub fn prio_inbound(&self) -> u32 {
        self.rule_priority
    }
    pub fn prio_suppress(&self) -> u32 {
        self.rule_priority + 1
    }
    pub fn prio_outbound(&self) -> u32 {
        self.rule_priority + 2
    }
    pub fn priorities(&self) -> [u32; RULE_PRIORITIES as usize] {
        [
            self.prio_inbound(),
            self.prio_suppress(),
            self.prio_outbound(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_encode_and_decode() {
        let ns = Namespace {
            mark_mask: 0x3f00_0000,
            table_base: 6100,
            rule_priority: 30100,
        };
        assert_eq!(ns.shift(), 24);
        assert_eq!(ns.inbound_flag(), 0x2000_0000);
        assert_eq!(ns.max_uplinks(), 31);
        assert_eq!(ns.mark(2), 0x0200_0000);
        assert_eq!(ns.inbound_mark(2), 0x2200_0000);
        assert_eq!(
            ns.decode(0x2200_0800),
            Some(Mark {
                id: 2,
                inbound: true
            })
        );
        assert_eq!(ns.decode(0x4000), None);
        assert_eq!(ns.id_of_table(6102), Some(2));
        assert_eq!(ns.id_of_table(6100), None);
        assert_eq!(ns.id_of_table(6132), None);
        for id in 1..=ns.max_uplinks() {
            assert_eq!(ns.decode(ns.mark(id)).map(|m| m.id), Some(id));
            assert_eq!(ns.mark(id) & !ns.mark_mask, 0);
        }
    }
}
