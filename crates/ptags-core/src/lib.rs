//! The semantics of ptags, as pure Rust with no I/O.
//!
//! - [`tag`]: names, values, permissions and their limits;
//! - [`line`]: the write language, parsed one line at a time;
//! - [`apply`]: applying a write to a tag set, with the permission model
//!   of [`perm`];
//! - [`tagset`]: the immutable, shared set with its read format and its
//!   content [`digest`], and [`intern`] to give equal sets one ID;
//! - [`contid`]: the audit container ID, its text forms and the rules for
//!   setting it;
//! - [`oci`]: the state an OCI runtime gives its hooks, and the label a
//!   container gets from it.
//!
//! Every failure maps to the [`Errno`] the reference semantics give.

pub mod apply;
pub mod contid;
pub mod devices;
pub mod digest;
pub mod errno;
pub mod intern;
pub mod line;
pub mod oci;
pub mod oci_devices;
pub mod perm;
pub mod tag;
pub mod tagset;

pub use apply::{apply_write, LineFailure, Reason, WriteOutcome};
pub use contid::{decide, Chain, Container, ContainerId, Decision, Limits, SetRequest, TaskRef};
pub use digest::Digest;
pub use errno::Errno;
pub use intern::{Interner, SetId};
pub use perm::{Target, Writer};
pub use tag::{Action, Invalid, Tag, MAX_NAME_LEN, MAX_TAGS, MAX_VALUE_LEN};
pub use tagset::TagSet;
