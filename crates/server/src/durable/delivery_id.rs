//! Delivery ids: what a client sends back to settle a delivery.
//!
//! An id names the subscription's generation (a subscription deleted and
//! created again under the same name refuses the old ids as stale), the
//! record's partition and offset, and the attempt. That is all a server
//! needs to find the record, so an id stays valid across reconnects and
//! restarts, and any replica could settle it. Clients treat ids as opaque.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use super::ledger::{DeliveryRef, Slot};

/// A parsed delivery id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DeliveryId {
    pub generation: String,
    pub delivery: DeliveryRef,
}

/// A string that is not a delivery id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not a delivery id")]
pub struct MalformedDeliveryId(pub String);

impl DeliveryId {
    /// The id of `delivery` of a subscription of `generation`.
    pub(super) fn format(generation: &str, delivery: DeliveryRef) -> String {
        let DeliveryRef { slot, attempt } = delivery;
        format!("{generation}-{}-{}-{attempt}", slot.partition, slot.offset)
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Self::format(&self.generation, self.delivery))
    }
}

impl FromStr for DeliveryId {
    type Err = MalformedDeliveryId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || MalformedDeliveryId(text.chars().take(100).collect());
        let mut parts = text.split('-');
        let (Some(generation), Some(partition), Some(offset), Some(attempt), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(malformed());
        };
        let generation_ok = !generation.is_empty()
            && generation.len() <= 32
            && generation.bytes().all(|b| b.is_ascii_hexdigit());
        let numbers = (
            partition.parse::<i32>(),
            offset.parse::<i64>(),
            attempt.parse::<u32>(),
        );
        match (generation_ok, numbers) {
            (true, (Ok(partition), Ok(offset), Ok(attempt)))
                if partition >= 0 && offset >= 0 && attempt >= 1 =>
            {
                Ok(Self {
                    generation: generation.to_owned(),
                    delivery: DeliveryRef {
                        slot: Slot { partition, offset },
                        attempt,
                    },
                })
            }
            _ => Err(malformed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let id = DeliveryId {
            generation: "0a1b2c3d".to_owned(),
            delivery: DeliveryRef {
                slot: Slot {
                    partition: 3,
                    offset: 1_234_567,
                },
                attempt: 2,
            },
        };
        assert_eq!(id.to_string(), "0a1b2c3d-3-1234567-2");
        assert_eq!(id.to_string().parse(), Ok(id));
    }

    #[test]
    fn malformed_ids_are_refused() {
        for text in [
            "",
            "abc",
            "0a-1-2",
            "0a-1-2-3-4",
            "zz-1-2-3",
            "0a--1-2-3",
            "0a-1-2-0",
            "0a-x-2-3",
            "0a-1-99999999999999999999-1",
        ] {
            assert!(text.parse::<DeliveryId>().is_err(), "{text:?}");
        }
    }
}
