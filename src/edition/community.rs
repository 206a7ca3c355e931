//! The community edition: one vault per node, no telemetry unless the operator opts in.

#[cfg_attr(feature = "commercial", allow(dead_code))]
pub struct Community;

impl super::Edition for Community {
    fn name(&self) -> &'static str {
        "community"
    }

    fn max_vaults(&self) -> usize {
        1
    }
}
