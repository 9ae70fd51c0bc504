//! Turning incoming Arrow data into a frame's cells: alignment to the frame schema by name
//! ([`align`]), hive-style partitioning ([`partition`]), Parquet encoding ([`encode`]) with
//! the ledger's per-column statistics ([`stats`]).

pub mod align;
pub mod encode;
pub mod partition;
pub mod stats;

pub use align::{Alignment, is_safe_widening};
pub use encode::{CellEncoder, EncodedCell};
pub use partition::{Partition, escape_segment, format_value, parse_value, partition_dir, split};
