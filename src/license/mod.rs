//! Signed license caps (commercial only): the envelope, its validator, the default tier, the
//! five-state machine and the messages operators read.
//!
//! Pure: no clock of its own (callers pass `now`), no SQL, no HTTP, no files. The vendor's
//! minter (`license-minter/`) uses [`canonical_payload`] and [`validate`] from here so a minted
//! token is checked by the node's own code; this module never signs and never loads a private
//! key (only the minter crate does, and it is never part of a node build).

pub mod limits;
pub mod state;
pub mod token;

pub use limits::{DEFAULT_TIER, Limit, Limits};
pub use state::{LicenseSlot, State};
pub use token::{LicenseError, LicenseInfo, PublicKey, canonical_payload, validate};
