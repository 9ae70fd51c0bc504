//! What a coordinator ships of the frames a task reads: the ledger's state at the pinned
//! versions, so that a worker replays no ledger (see the manifest's "Shipped frames").
//!
//! Shipping is bounded: a task carries at most [`SHIP_BYTES`] of frame states. Pinned
//! frames that fit are shipped whole (they are the same for every task); the split frame's
//! entries are those of the task's own cells, within what is left. A frame that does not fit
//! is not shipped, and the worker reads its ledger as it would without shipping.

use std::collections::BTreeMap;
use std::sync::Arc;

use apiary_ledger::{Cell, LiveFrame};

use crate::table::FrameIndex;

use super::manifest::{FramePin, ShippedFrame};
use super::plan::Fragment;

/// Most bytes (as JSON) of frame states one task ships.
pub const SHIP_BYTES: usize = 512 << 10;

/// The frame states a fragment's tasks ship.
#[derive(Debug, Clone, Default)]
pub struct Shipping {
    /// The split frame's index at its version, which holds its ledger state (`None`:
    /// nothing is shipped).
    split: Option<Arc<FrameIndex>>,
    /// Pinned frames shipped whole (those that fit).
    pins: Vec<ShippedFrame>,
    /// What the pins left of [`SHIP_BYTES`] for the split frame's cells.
    left: usize,
}

impl Shipping {
    /// Shipping for a fragment that splits the frame `split` indexes and reads the frames
    /// of `pins` whole.
    pub fn new(split: Arc<FrameIndex>, pins: &[(FramePin, Arc<FrameIndex>)]) -> Self {
        let mut left = SHIP_BYTES;
        let pins = pins
            .iter()
            .filter_map(|(pin, index)| {
                let live = index.source()?;
                ship(pin, live, live.cells.values(), &mut left)
            })
            .collect();
        Self {
            split: Some(split),
            pins,
            left,
        }
    }

    /// Shipping of nothing: every task reads its frames from their ledgers.
    pub fn nothing() -> Self {
        Self::default()
    }

    /// The states a task ships that reads `names` of the split frame `pin` (cell paths, or
    /// keys of parts of cells). The split frame is shipped only when every name is one of
    /// its cells (a worker then reports a name that is not) and its entries fit.
    pub fn ships<'a>(
        &self,
        pin: &FramePin,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Vec<ShippedFrame> {
        let Some(split) = self.split.as_ref().and_then(|i| i.source()) else {
            return self.pins.clone();
        };
        // By path: the parts of one cell ship it once.
        let cells: Option<BTreeMap<&str, &Cell>> = names
            .into_iter()
            .map(|name| {
                let cell = crate::parts::named_cell(split, name)?;
                Some((cell.path.as_str(), cell))
            })
            .collect();
        let mut left = self.left;
        let split = cells.and_then(|cells| ship(pin, split, cells.into_values(), &mut left));
        split.into_iter().chain(self.pins.iter().cloned()).collect()
    }
}

impl Fragment {
    /// The frame states a task ships that reads `names` of the split frame (cell paths, or
    /// keys of parts of cells): within [`SHIP_BYTES`], the split frame's entries of those
    /// cells and the pinned frames that fit.
    pub fn ships<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<ShippedFrame> {
        self.shipping.ships(&self.split, names)
    }
}

/// `live` at `pin` with only `cells`, if their entries fit in `left` bytes (which they then
/// take from it).
fn ship<'a>(
    pin: &FramePin,
    live: &LiveFrame,
    cells: impl IntoIterator<Item = &'a Cell>,
    left: &mut usize,
) -> Option<ShippedFrame> {
    let mut size = serde_json::to_vec(&live.definition).ok()?.len();
    let mut shipped = Vec::new();
    for cell in cells {
        size += serde_json::to_vec(cell).ok()?.len() + 1;
        if size > *left {
            return None;
        }
        shipped.push(cell.clone());
    }
    if size > *left {
        return None;
    }
    *left -= size;
    Some(ShippedFrame {
        pin: pin.clone(),
        incarnation: live.incarnation,
        definition: live.definition.clone(),
        cells: shipped,
    })
}

#[cfg(test)]
mod tests;
