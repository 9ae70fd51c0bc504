//! Turning incoming Arrow data into a frame's cells: alignment to the frame schema by name
//! ([`align`]) and hive-style partitioning ([`partition`]).

pub mod align;
pub mod partition;

pub use align::{Alignment, is_safe_widening};
pub use partition::{Partition, escape_segment, format_value, parse_value, partition_dir, split};
