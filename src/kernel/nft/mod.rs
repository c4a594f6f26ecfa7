//! A small native nf_tables client: builds tables, chains, sets and rules, commits them
//! as one atomic netlink transaction, and reads them back, over a netfilter netlink
//! socket (no libnftnl, no `nft` process).
//!
//! Why our own: `rustables` is GPL-3.0 (we are MIT) and lacks numgen, fib, socket and
//! dynset; the `nftnl` crate binds the GPL C library libnftnl; the `nftables` crate
//! drives `nft` through JSON, one process per call, too slow for a no-op reconcile in a
//! few milliseconds. What we need is small: the expressions, sets and messages of our
//! own table, encoded as `nft` encodes them (its `--debug=netlink` output is the
//! reference, and the tests compare `nft list` of our tables with what `nft -f` loads).
//!
//! Layout: `wire` holds the bytes (netlink attributes, headers, constants), [`expr`]
//! the rule expressions, [`set`] sets, elements and intervals, [`objects`] tables,
//! chains, rules and verdicts, [`batch`] transactions and [`client`] the socket.
//! The API is synchronous: every call is a system call or two that nf_tables answers
//! at once.
//!
//! ```no_run
//! use nm_multiwan::kernel::nft::{Batch, Family, Nft, Table, TableContents};
//! let mut nft = Nft::new()?;
//! let contents = TableContents {
//!     table: Table::new(Family::Inet, "nm-multiwan").with_comment("plan=abc"),
//!     chains: vec![],
//!     sets: vec![],
//!     rules: vec![],
//! };
//! let mut batch = Batch::new();
//! batch.replace_table(&contents)?;
//! nft.commit(&batch)?;
//! assert_eq!(
//!     nft.get_table(Family::Inet, "nm-multiwan")?.and_then(|t| t.comment).as_deref(),
//!     Some("plan=abc")
//! );
//! # Ok::<(), nm_multiwan::kernel::nft::Error>(())
//! ```

pub mod batch;
pub mod client;
pub mod data;
pub mod error;
pub mod expr;
pub mod objects;
pub mod set;
pub mod value;
pub(crate) mod wire;

pub use batch::{Batch, TableContents};
pub use client::{Nft, available};
pub use error::{Error, Result};
pub use expr::{
    CmpOp, CtDirection, CtKey, DynsetOp, Expr, FibFlags, FibResult, MetaKey, NatKind, NumgenMode,
    PayloadBase, Reg, Reject, SetRef, SocketKey, matches, nat_flags,
};
pub use objects::{
    BaseChain, Chain, ChainInfo, ChainKind, Counter, Family, Hook, Policy, Rule, RuleInfo, Table,
    TableInfo, Verdict, priority,
};
pub use set::{DataType, ElemData, Element, Key, KeyType, Set, SetData, SetFlags, SetInfo};
