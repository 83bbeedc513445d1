//! A shard: the K-th of N disjoint slices of a run's seeded case stream.
//! Case `i` of every scenario belongs to shard `i mod N + 1`, so the
//! shards together play exactly the cases one unsharded run plays, each
//! drawn from the same RNG state, and `report merge` can put their
//! findings back in the order one run finds them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Shard `index` of `count`, 1-based as CI matrices count (`1/4` … `4/4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// Why a `K/N` shard was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("--shard {0:?}: expected K/N, as in 1/4")]
    Format(String),
    #[error("--shard {text:?}: N is 0; a run has at least one shard")]
    NoShards { text: String },
    #[error("--shard {text:?}: K is {index}, outside 1..={count}")]
    OutOfRange {
        text: String,
        index: u32,
        count: u32,
    },
}

impl Shard {
    /// The whole stream as one shard.
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// Whether the case at `case_index` of a scenario's stream is this
    /// shard's to play.
    pub fn owns(self, case_index: u32) -> bool {
        case_index % self.count.max(1) + 1 == self.index
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let format = || ShardError::Format(text.to_owned());
        let (index, count) = text.split_once('/').ok_or_else(format)?;
        let index: u32 = index.trim().parse().map_err(|_| format())?;
        let count: u32 = count.trim().parse().map_err(|_| format())?;
        if count == 0 {
            return Err(ShardError::NoShards {
                text: text.to_owned(),
            });
        }
        if !(1..=count).contains(&index) {
            return Err(ShardError::OutOfRange {
                text: text.to_owned(),
                index,
                count,
            });
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_the_stream_into_disjoint_slices_that_cover_it() {
        let shards: Vec<Shard> = (1..=4).map(|index| Shard { index, count: 4 }).collect();
        for case_index in 0..40 {
            let owners = shards.iter().filter(|shard| shard.owns(case_index)).count();
            assert_eq!(owners, 1, "case {case_index}");
        }
        assert!(Shard::WHOLE.owns(7));
        assert!(Shard { index: 2, count: 4 }.owns(5));
    }

    #[test]
    fn a_shard_outside_its_range_is_refused_naming_it() {
        assert_eq!("3/4".parse(), Ok(Shard { index: 3, count: 4 }));
        let refused = |text: &str| text.parse::<Shard>().expect_err(text).to_string();
        assert!(refused("0/4").contains("K is 0, outside 1..=4"));
        assert!(refused("5/4").contains("K is 5, outside 1..=4"));
        assert!(refused("1/0").contains("N is 0"));
        assert!(refused("x").contains("expected K/N"));
        assert!(refused("1/-2").contains("expected K/N"));
    }
}
