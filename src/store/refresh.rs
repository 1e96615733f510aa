//! The refresh-token registry's old path, kept for callers: its Redis half
//! lives in [`super::redis::registry`], its Postgres half in
//! [`super::pg::refresh`].

pub use super::{
    pg::refresh::RefreshRow,
    redis::registry::{RefreshEntry, RefreshLookup, State},
};
