//! [`RequestCounts`]: requests to a store, by kind, as S3 bills them.

/// Request counts by kind. Subtract two snapshots to count what happened in between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// GET requests (whole object or range).
    pub get: u64,
    /// HEAD requests.
    pub head: u64,
    /// Unconditional PUTs.
    pub put: u64,
    /// Conditional PUTs (`If-None-Match` or `If-Match`).
    pub conditional_put: u64,
    /// LIST requests: one per page of up to 1000 keys, as S3 pages them.
    pub list: u64,
    /// DELETE requests.
    pub delete: u64,
    /// The GET requests (included in `get`) for `.parquet` objects: cell data.
    pub cell_get: u64,
}

impl RequestCounts {
    /// All requests together.
    pub fn total(&self) -> u64 {
        self.get + self.head + self.put + self.conditional_put + self.list + self.delete
    }

    /// These counts less `earlier`'s, each at least zero (counters read at two moments).
    pub fn saturating_sub(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts {
            get: self.get.saturating_sub(earlier.get),
            head: self.head.saturating_sub(earlier.head),
            put: self.put.saturating_sub(earlier.put),
            conditional_put: self.conditional_put.saturating_sub(earlier.conditional_put),
            list: self.list.saturating_sub(earlier.list),
            delete: self.delete.saturating_sub(earlier.delete),
            cell_get: self.cell_get.saturating_sub(earlier.cell_get),
        }
    }

    /// GET requests for anything but cell data (ledgers, hints, heartbeats, …).
    pub fn metadata_get(&self) -> u64 {
        self.get - self.cell_get
    }
}

impl RequestCounts {
    /// Every count divided by `n` (a per-node or per-operation mean).
    pub fn divided_by(self, n: u64) -> RequestCounts {
        let n = n.max(1);
        RequestCounts {
            get: self.get / n,
            head: self.head / n,
            put: self.put / n,
            conditional_put: self.conditional_put / n,
            list: self.list / n,
            delete: self.delete / n,
            cell_get: self.cell_get / n,
        }
    }
}

impl std::ops::Add for RequestCounts {
    type Output = RequestCounts;
    fn add(self, o: RequestCounts) -> RequestCounts {
        RequestCounts {
            get: self.get + o.get,
            head: self.head + o.head,
            put: self.put + o.put,
            conditional_put: self.conditional_put + o.conditional_put,
            list: self.list + o.list,
            delete: self.delete + o.delete,
            cell_get: self.cell_get + o.cell_get,
        }
    }
}

impl std::ops::Sub for RequestCounts {
    type Output = RequestCounts;
    fn sub(self, o: RequestCounts) -> RequestCounts {
        RequestCounts {
            get: self.get - o.get,
            head: self.head - o.head,
            put: self.put - o.put,
            conditional_put: self.conditional_put - o.conditional_put,
            list: self.list - o.list,
            delete: self.delete - o.delete,
            cell_get: self.cell_get - o.cell_get,
        }
    }
}
