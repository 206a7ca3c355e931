//! Which edition this binary is, behind one trait.
//!
//! Community is the default build; the commercial edition exists only when compiled with the
//! cargo feature `commercial`, gated once at its `mod` line below. Application code asks
//! [`current()`] and never tests the feature itself, so a community binary holds no commercial
//! code to switch on.

#[cfg(feature = "commercial")]
mod commercial;
mod community;

pub trait Edition: Send + Sync {
    /// "community" or "commercial".
    fn name(&self) -> &'static str;
    /// How many vaults one node serves.
    fn max_vaults(&self) -> usize;
}

/// The edition compiled into this binary.
pub fn current() -> &'static dyn Edition {
    #[cfg(feature = "commercial")]
    {
        &commercial::Commercial
    }
    #[cfg(not(feature = "commercial"))]
    {
        &community::Community
    }
}
