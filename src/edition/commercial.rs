//! The commercial edition: a node serves many vaults (tenants).

pub struct Commercial;

impl super::Edition for Commercial {
    fn name(&self) -> &'static str {
        "commercial"
    }

    fn max_vaults(&self) -> usize {
        10_000
    }
}
