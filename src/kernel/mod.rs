pub mod conntrack;
pub mod keeper;
