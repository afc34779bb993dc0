//! The schema registry: subjects of JSON Schemas per tenant, their
//! versions and compatibility rules, and the compiled validators that the
//! publish paths enforce.

pub mod compatibility;
pub mod registry;
