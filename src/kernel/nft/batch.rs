//! A transaction: an ordered list of nf_tables messages that [`super::Nft::commit`]
//! sends between BATCH_BEGIN and BATCH_END. The kernel applies all of them or none.
//! Each message keeps a description ("adding rule 7 to chain output ...") so that a
//! refusal can say which one the kernel refused.

use std::collections::HashMap;

use super::error::Result;
use super::expr::{self, AnonymousSet, Expr, SetIds, SetRef};
use super::objects::{self, Chain, Family, Rule, Table};
use super::set::{Element, Set};
use super::wire::{self, AttrWriter, msg};

/// One message of a batch, without its sequence number.
#[derive(Debug, Clone)]
pub(crate) struct BatchMsg {
    pub msg: u8,
    pub flags: u16,
    pub family: Family,
    pub attrs: Vec<u8>,
    pub what: String,
}

/// Everything a table holds, for [`Batch::replace_table`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableContents {
    pub table: Table,
    pub chains: Vec<Chain>,
    /// Sets and maps with their elements.
    pub sets: Vec<Set>,
    /// Rules in order; each names its chain.
    pub rules: Vec<Rule>,
}

/// An ordered list of operations, committed as one transaction.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub(crate) msgs: Vec<BatchMsg>,
    /// Transaction ids of the sets added in this batch, by (family, table, set).
    set_ids: HashMap<(Family, String, String), u32>,
    /// Rules added so far per (family, table, chain), to number them in descriptions.
    rules: HashMap<(Family, String, String), usize>,
    next_set_id: u32,
}

/// The batch's set ids as seen from one table.
struct TableSetIds<'a> {
    ids: &'a HashMap<(Family, String, String), u32>,
    family: Family,
    table: &'a str,
}

impl SetIds for TableSetIds<'_> {
    fn set_id(&self, name: &str) -> Option<u32> {
        self.ids
            .get(&(self.family, self.table.to_string(), name.to_string()))
            .copied()
    }
}

/// Largest element list per message: attribute lengths are 16 bits.
const ELEMENTS_PER_MESSAGE_BYTES: usize = 16 * 1024;

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Number of messages (not counting BATCH_BEGIN/END).
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// The descriptions of the operations, in order.
    pub fn operations(&self) -> impl Iterator<Item = &str> {
        self.msgs.iter().map(|m| m.what.as_str())
    }

    fn push(&mut self, msg: u8, flags: u16, family: Family, attrs: AttrWriter, what: String) {
        self.msgs.push(BatchMsg {
            msg,
            flags,
            family,
            attrs: attrs.into_bytes(),
            what,
        });
    }

    fn new_set_id(&mut self) -> u32 {
        self.next_set_id += 1;
        self.next_set_id
    }

    /// Adds a table; no error if it exists (it is left as it is, comment included).
    pub fn add_table(&mut self, table: &Table) -> Result<&mut Self> {
        let mut w = AttrWriter::new();
        table.encode(&mut w)?;
        self.push(
            msg::NEWTABLE,
            wire::NLM_F_CREATE,
            table.family,
            w,
            format!("adding table {} {}", table.family, table.name),
        );
        Ok(self)
    }

    /// Deletes a table and everything in it; the transaction fails if it does not exist.
    pub fn delete_table(&mut self, family: Family, name: &str) -> &mut Self {
        let mut w = AttrWriter::new();
        w.put_str(wire::table::NAME, name);
        self.push(
            msg::DELTABLE,
            0,
            family,
            w,
            format!("deleting table {family} {name}"),
        );
        self.forget_table(family, name);
        self
    }

    /// Deletes a table if it exists: adds it (a no-op when present), then deletes it.
    /// Works on every kernel with nf_tables, unlike NFT_MSG_DESTROYTABLE (6.3+).
    pub fn delete_table_if_exists(&mut self, family: Family, name: &str) -> &mut Self {
        let mut w = AttrWriter::new();
        w.put_str(wire::table::NAME, name);
        w.put_u32(wire::table::FLAGS, 0);
        self.push(
            msg::NEWTABLE,
            wire::NLM_F_CREATE,
            family,
            w,
            format!("making sure table {family} {name} exists before deleting it"),
        );
        self.delete_table(family, name)
    }

    /// Replaces a whole table in this transaction: deletes it if it exists, then creates
    /// it with its chains, sets (with elements) and rules. Nothing sees a half-built
    /// table: the kernel switches from the old to the new one at commit.
    pub fn replace_table(&mut self, contents: &TableContents) -> Result<&mut Self> {
        let t = &contents.table;
        self.delete_table_if_exists(t.family, &t.name);
        self.add_table(t)?;
        for chain in &contents.chains {
            self.add_chain(t.family, &t.name, chain);
        }
        for set in &contents.sets {
            self.add_set(t.family, &t.name, set)?;
        }
        for rule in &contents.rules {
            self.add_rule(t.family, &t.name, rule)?;
        }
        Ok(self)
    }

    /// Deletes every rule of a table (chains and sets stay).
    pub fn flush_table(&mut self, family: Family, name: &str) -> &mut Self {
        let mut w = AttrWriter::new();
        w.put_str(wire::rule::TABLE, name);
        self.push(
            msg::DELRULE,
            0,
            family,
            w,
            format!("flushing table {family} {name}"),
        );
        self
    }

    pub fn add_chain(&mut self, family: Family, table: &str, chain: &Chain) -> &mut Self {
        let mut w = AttrWriter::new();
        chain.encode(table, &mut w);
        self.push(
            msg::NEWCHAIN,
            wire::NLM_F_CREATE,
            family,
            w,
            format!("adding chain {} to table {family} {table}", chain.name),
        );
        self
    }

    /// Deletes an empty chain that nothing jumps to.
    pub fn delete_chain(&mut self, family: Family, table: &str, name: &str) -> &mut Self {
        let mut w = AttrWriter::new();
        w.put_str(wire::chain::TABLE, table);
        w.put_str(wire::chain::NAME, name);
        self.push(
            msg::DELCHAIN,
            0,
            family,
            w,
            format!("deleting chain {name} of table {family} {table}"),
        );
        self
    }

    /// Deletes every rule of a chain.
    pub fn flush_chain(&mut self, family: Family, table: &str, name: &str) -> &mut Self {
        let mut w = AttrWriter::new();
        w.put_str(wire::rule::TABLE, table);
        w.put_str(wire::rule::CHAIN, name);
        self.push(
            msg::DELRULE,
            0,
            family,
            w,
            format!("flushing chain {name} of table {family} {table}"),
        );
        self
    }

    /// Adds a set or map, and its elements if it has any.
    pub fn add_set(&mut self, family: Family, table: &str, set: &Set) -> Result<&mut Self> {
        let id = self.new_set_id();
        let mut w = AttrWriter::new();
        set.encode(table, &set.name, id, false, 0, &mut w)?;
        self.push(
            msg::NEWSET,
            wire::NLM_F_CREATE,
            family,
            w,
            format!("adding set {} to table {family} {table}", set.name),
        );
        self.set_ids
            .insert((family, table.to_string(), set.name.clone()), id);
        if !set.elements.is_empty() {
            self.add_elements(family, table, set, &set.elements)?;
        }
        Ok(self)
    }

    pub fn delete_set(&mut self, family: Family, table: &str, name: &str) -> &mut Self {
        let mut w = AttrWriter::new();
        w.put_str(wire::set::TABLE, table);
        w.put_str(wire::set::NAME, name);
        self.push(
            msg::DELSET,
            0,
            family,
            w,
            format!("deleting set {name} of table {family} {table}"),
        );
        self.set_ids
            .remove(&(family, table.to_string(), name.to_string()));
        self
    }

    /// Adds `elements` to the existing set `set` (its name, key, data and flags say how
    /// to encode them; its own `elements` are ignored). Interval elements are merged.
    pub fn add_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &Set,
        elements: &[Element],
    ) -> Result<&mut Self> {
        self.elements(family, table, set, elements, false)
    }

    /// Deletes `elements` from the existing set `set`; interval elements must be given
    /// as they were added (after merging).
    pub fn delete_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &Set,
        elements: &[Element],
    ) -> Result<&mut Self> {
        self.elements(family, table, set, elements, true)
    }

    fn elements(
        &mut self,
        family: Family,
        table: &str,
        set: &Set,
        elements: &[Element],
        delete: bool,
    ) -> Result<&mut Self> {
        let id = self
            .set_ids
            .get(&(family, table.to_string(), set.name.clone()))
            .copied();
        let chunks = encode_element_chunks(set, elements, delete, false)?;
        let (ty, flags, verb) = if delete {
            (msg::DELSETELEM, 0, "deleting elements of")
        } else {
            (msg::NEWSETELEM, wire::NLM_F_CREATE, "adding elements to")
        };
        for (list, count) in chunks {
            let mut w = AttrWriter::new();
            w.put_str(wire::elem::LIST_TABLE, table);
            w.put_str(wire::elem::LIST_SET, &set.name);
            if let Some(id) = id {
                w.put_u32(wire::elem::LIST_SET_ID, id);
            }
            w.put_raw(&list);
            self.push(
                ty,
                flags,
                family,
                w,
                format!(
                    "{verb} set {} of table {family} {table} ({count} kernel elements)",
                    set.name
                ),
            );
        }
        Ok(self)
    }

    /// Deletes every element of a set.
    pub fn flush_set(&mut self, family: Family, table: &str, name: &str) -> &mut Self {
        let mut w = AttrWriter::new();
        w.put_str(wire::elem::LIST_TABLE, table);
        w.put_str(wire::elem::LIST_SET, name);
        self.push(
            msg::DELSETELEM,
            0,
            family,
            w,
            format!("flushing set {name} of table {family} {table}"),
        );
        self
    }

    /// Appends a rule to its chain, creating the anonymous sets its lookups carry.
    pub fn add_rule(&mut self, family: Family, table: &str, rule: &Rule) -> Result<&mut Self> {
        let n = {
            let count = self
                .rules
                .entry((family, table.to_string(), rule.chain.clone()))
                .or_insert(0);
            *count += 1;
            *count
        };
        let label = match &rule.comment {
            Some(c) => format!("rule {n} (\"{c}\")"),
            None => format!("rule {n}"),
        };
        let what = format!(
            "adding {label} to chain {} of table {family} {table}",
            rule.chain
        );
        let mut anonymous = Vec::new();
        for e in &rule.exprs {
            if let Expr::Lookup {
                set: SetRef::Anonymous(set),
                ..
            } = e
            {
                anonymous.push(self.add_anonymous_set(family, table, set, &what)?);
            }
        }
        let mut w = AttrWriter::new();
        w.put_str(wire::rule::TABLE, table);
        w.put_str(wire::rule::CHAIN, &rule.chain);
        let ids = TableSetIds {
            ids: &self.set_ids,
            family,
            table,
        };
        w.nest(wire::rule::EXPRESSIONS, |list| {
            expr::encode_list(list, &rule.exprs, &ids, &anonymous)
        });
        if let Some(comment) = &rule.comment {
            objects::check_comment(comment, &format!("comment of {what}"))?;
            w.put(wire::rule::USERDATA, &wire::comment_udata(comment));
        }
        self.push(
            msg::NEWRULE,
            wire::NLM_F_CREATE | wire::NLM_F_APPEND,
            family,
            w,
            what,
        );
        Ok(self)
    }

    fn add_anonymous_set(
        &mut self,
        family: Family,
        table: &str,
        set: &Set,
        rule: &str,
    ) -> Result<AnonymousSet> {
        const NAME: &str = "__set%d";
        let id = self.new_set_id();
        let chunks = encode_element_chunks(set, &set.elements, false, true)?;
        let count = chunks.iter().map(|(_, n)| n).sum();
        let mut w = AttrWriter::new();
        set.encode(table, NAME, id, true, count, &mut w)?;
        let what = format!("{rule}: its anonymous set");
        self.push(msg::NEWSET, wire::NLM_F_CREATE, family, w, what.clone());
        for (list, _) in chunks {
            let mut w = AttrWriter::new();
            w.put_str(wire::elem::LIST_TABLE, table);
            w.put_str(wire::elem::LIST_SET, NAME);
            w.put_u32(wire::elem::LIST_SET_ID, id);
            w.put_raw(&list);
            self.push(
                msg::NEWSETELEM,
                wire::NLM_F_CREATE,
                family,
                w,
                format!("{what}'s elements"),
            );
        }
        Ok(AnonymousSet {
            name: NAME.to_string(),
            id,
        })
    }

    /// After deleting a table, its sets are no longer found by the ids of this batch.
    fn forget_table(&mut self, family: Family, name: &str) {
        self.set_ids
            .retain(|(f, t, _), _| !(*f == family && t == name));
        self.rules
            .retain(|(f, t, _), _| !(*f == family && t == name));
    }
}

/// Encodes elements into `NFTA_SET_ELEM_LIST_ELEMENTS` attributes small enough for one
/// message each, with the number of kernel elements in each.
fn encode_element_chunks(
    set: &Set,
    elements: &[Element],
    delete: bool,
    merge_adjacent: bool,
) -> Result<Vec<(Vec<u8>, usize)>> {
    let items = set.encode_elements(elements, delete, merge_adjacent)?;
    let mut chunks: Vec<Vec<&[u8]>> = vec![Vec::new()];
    let mut bytes = 0;
    for item in &items {
        let current = chunks.last_mut().expect("never empty");
        if bytes + item.len() > ELEMENTS_PER_MESSAGE_BYTES && !current.is_empty() {
            chunks.push(Vec::new());
            bytes = 0;
        }
        chunks.last_mut().expect("never empty").push(item);
        bytes += item.len();
    }
    Ok(chunks
        .into_iter()
        .map(|chunk| {
            let mut w = AttrWriter::new();
            w.nest(wire::elem::LIST_ELEMENTS, |list| {
                for item in &chunk {
                    list.put_raw(item);
                }
            });
            (w.into_bytes(), chunk.len())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::nft::expr::Reg;
    use crate::kernel::nft::objects::Verdict;
    use crate::kernel::nft::set::{DataType, KeyType};
    use crate::kernel::nft::wire::Attrs;
    use std::net::Ipv4Addr;

    #[test]
    fn replace_deletes_then_builds_in_order_and_names_each_step() {
        let contents = TableContents {
            table: Table::new(Family::Inet, "nm-multiwan").with_comment("plan=abc"),
            chains: vec![Chain::regular("to_1")],
            sets: vec![
                Set::new("exclude4", KeyType::single(DataType::Ipv4Addr))
                    .interval()
                    .with_elements(vec![Element::ipv4_prefix(Ipv4Addr::new(10, 0, 1, 0), 24)]),
            ],
            rules: vec![
                Rule::new("to_1", vec![Expr::counter()]),
                Rule::new("to_1", vec![Expr::verdict(Verdict::Accept)]).with_comment("two"),
            ],
        };
        let mut batch = Batch::new();
        batch.replace_table(&contents).unwrap();
        let ops: Vec<&str> = batch.operations().collect();
        assert_eq!(
            ops,
            vec![
                "making sure table inet nm-multiwan exists before deleting it",
                "deleting table inet nm-multiwan",
                "adding table inet nm-multiwan",
                "adding chain to_1 to table inet nm-multiwan",
                "adding set exclude4 to table inet nm-multiwan",
                "adding elements to set exclude4 of table inet nm-multiwan (3 kernel elements)",
                "adding rule 1 to chain to_1 of table inet nm-multiwan",
                "adding rule 2 (\"two\") to chain to_1 of table inet nm-multiwan",
            ]
        );
    }

    #[test]
    fn lookups_of_sets_added_in_the_batch_carry_their_id() {
        let mut batch = Batch::new();
        let set = Set::new("exclude4", KeyType::single(DataType::Ipv4Addr)).interval();
        batch.add_set(Family::Inet, "t", &set).unwrap();
        batch
            .add_rule(
                Family::Inet,
                "t",
                &Rule::new("c", vec![Expr::lookup("exclude4", Reg::R1)]),
            )
            .unwrap();
        let rule = batch.msgs.last().unwrap();
        let attrs = Attrs::new(&rule.attrs).collect_all().unwrap();
        let exprs = attrs
            .iter()
            .find(|a| a.ty == wire::rule::EXPRESSIONS)
            .unwrap();
        let item = exprs.nested().next().unwrap().unwrap();
        let data = item.nested().nth(1).unwrap().unwrap();
        let id = data
            .nested()
            .find(|a| a.as_ref().unwrap().ty == 4)
            .unwrap()
            .unwrap();
        assert_eq!(id.u32().unwrap(), 1);
    }

    #[test]
    fn anonymous_sets_precede_their_rule() {
        let mut batch = Batch::new();
        let ports = Set::new("", KeyType::single(DataType::InetService))
            .interval()
            .with_elements(vec![Element::port(443), Element::port_range(8000, 8100)]);
        batch
            .add_rule(
                Family::Inet,
                "t",
                &Rule::new("output", vec![Expr::lookup_anonymous(ports, Reg::R1)]),
            )
            .unwrap();
        let kinds: Vec<u8> = batch.msgs.iter().map(|m| m.msg).collect();
        assert_eq!(kinds, vec![msg::NEWSET, msg::NEWSETELEM, msg::NEWRULE]);
        // Sized as nft sizes it: 0-end, 443, 444-end, 8000, 8101-end.
        let set_attrs = Attrs::new(&batch.msgs[0].attrs).collect_all().unwrap();
        let desc = set_attrs.iter().find(|a| a.ty == wire::set::DESC).unwrap();
        assert_eq!(desc.nested().next().unwrap().unwrap().u32().unwrap(), 5);
        let flags = set_attrs.iter().find(|a| a.ty == wire::set::FLAGS).unwrap();
        assert_eq!(flags.u32().unwrap(), 7);
    }

    #[test]
    fn large_element_lists_are_split_across_messages() {
        let set = Set::new("big", KeyType::single(DataType::Ipv4Addr));
        let elements: Vec<Element> = (0..5000u32)
            .map(|i| Element::ipv4(Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        let mut batch = Batch::new();
        batch
            .add_elements(Family::Ip, "t", &set, &elements)
            .unwrap();
        assert!(batch.len() > 1, "{}", batch.len());
        assert!(batch.msgs.iter().all(|m| m.attrs.len() < 60_000));
        let total: usize = batch
            .msgs
            .iter()
            .map(|m| {
                let attrs = Attrs::new(&m.attrs).collect_all().unwrap();
                let list = attrs
                    .iter()
                    .find(|a| a.ty == wire::elem::LIST_ELEMENTS)
                    .unwrap();
                list.nested().count()
            })
            .sum();
        assert_eq!(total, 5000);
    }
}
