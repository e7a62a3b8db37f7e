//! The size limits of a fetch: one table ([`Limit`]) that the reconciler's flags, the
//! GitRepository's `spec.limits`, the transfer guard, the tree walk, the condition messages,
//! the metric labels and `docs/sources.md` all derive from.
//!
//! Each limit has a reconciler-wide value (a flag of the reconciler, [`Limit::flag`]) and can
//! only be tightened per GitRepository (`spec.limits.<field>`, [`Limit::field`]): a GitRepository
//! never gets more than its reconciler allows.

use super::artifact::UnpackLimits;

/// One limit on what a fetch may bring in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Bytes received from the server over the whole fetch (ref listing and pack).
    ReceivedBytes,
    /// Objects announced in the pack.
    Objects,
    /// The largest single object (a file's content, or a tree/commit) once unpacked.
    FileSize,
    /// The sum of the sizes of the commit's files: counted over the pack's objects as they
    /// arrive (every file, ignored ones included, since they are downloaded too) and again over
    /// the files written into the artifact.
    TreeSize,
    /// Files and directories written into the artifact.
    Files,
}

impl Limit {
    /// Every limit, in the order they are documented.
    pub const ALL: [Limit; 5] = [
        Limit::ReceivedBytes,
        Limit::Objects,
        Limit::FileSize,
        Limit::TreeSize,
        Limit::Files,
    ];

    /// The default of the reconciler-wide value.
    pub const fn default_value(self) -> u64 {
        match self {
            Limit::ReceivedBytes => 256 * 1024 * 1024,
            Limit::Objects => 100_000,
            Limit::FileSize => 32 * 1024 * 1024,
            Limit::TreeSize => UnpackLimits::DEFAULT_MAX_TOTAL_BYTES,
            Limit::Files => UnpackLimits::DEFAULT_MAX_ENTRIES,
        }
    }

    /// The reconciler flag that sets it.
    pub const fn flag(self) -> &'static str {
        match self {
            Limit::ReceivedBytes => "--max-received-bytes",
            Limit::Objects => "--max-objects",
            Limit::FileSize => "--max-file-size",
            Limit::TreeSize => "--max-tree-size",
            Limit::Files => "--max-files",
        }
    }

    /// The field of `spec.limits` that tightens it for one GitRepository.
    pub const fn field(self) -> &'static str {
        match self {
            Limit::ReceivedBytes => "maxReceivedBytes",
            Limit::Objects => "maxObjects",
            Limit::FileSize => "maxFileSize",
            Limit::TreeSize => "maxTreeSize",
            Limit::Files => "maxFiles",
        }
    }

    /// The stable metric label (`gitops_source_fetch_aborted_total{limit=...}`).
    pub const fn label(self) -> &'static str {
        match self {
            Limit::ReceivedBytes => "received_bytes",
            Limit::Objects => "objects",
            Limit::FileSize => "file_size",
            Limit::TreeSize => "tree_size",
            Limit::Files => "files",
        }
    }

    /// What is measured, for messages.
    pub const fn what(self) -> &'static str {
        match self {
            Limit::ReceivedBytes => "bytes received",
            Limit::Objects => "objects in the pack",
            Limit::FileSize => "bytes in one object",
            Limit::TreeSize => "bytes of files in the tree",
            Limit::Files => "files and directories",
        }
    }
}

/// The values of every [`Limit`] for one fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLimits {
    /// [`Limit::ReceivedBytes`], in bytes.
    pub max_received_bytes: u64,
    /// [`Limit::Objects`], a count.
    pub max_objects: u64,
    /// [`Limit::FileSize`], in bytes.
    pub max_file_bytes: u64,
    /// [`Limit::TreeSize`], in bytes.
    pub max_tree_bytes: u64,
    /// [`Limit::Files`], a count.
    pub max_files: u64,
}

impl Default for SourceLimits {
    fn default() -> Self {
        let mut limits = Self {
            max_received_bytes: 0,
            max_objects: 0,
            max_file_bytes: 0,
            max_tree_bytes: 0,
            max_files: 0,
        };
        for limit in Limit::ALL {
            *limits.slot(limit) = limit.default_value();
        }
        limits
    }
}

impl SourceLimits {
    /// The value of `limit`.
    pub fn get(&self, limit: Limit) -> u64 {
        match limit {
            Limit::ReceivedBytes => self.max_received_bytes,
            Limit::Objects => self.max_objects,
            Limit::FileSize => self.max_file_bytes,
            Limit::TreeSize => self.max_tree_bytes,
            Limit::Files => self.max_files,
        }
    }

    fn slot(&mut self, limit: Limit) -> &mut u64 {
        match limit {
            Limit::ReceivedBytes => &mut self.max_received_bytes,
            Limit::Objects => &mut self.max_objects,
            Limit::FileSize => &mut self.max_file_bytes,
            Limit::TreeSize => &mut self.max_tree_bytes,
            Limit::Files => &mut self.max_files,
        }
    }

    /// Sets `limit` to `value`.
    pub fn set(&mut self, limit: Limit, value: u64) {
        *self.slot(limit) = value;
    }

    /// These limits, each lowered to `tighter(limit)` when that is smaller; never raised.
    pub fn tightened(&self, tighter: impl Fn(Limit) -> Option<u64>) -> Self {
        let mut out = self.clone();
        for limit in Limit::ALL {
            if let Some(value) = tighter(limit) {
                let slot = out.slot(limit);
                *slot = (*slot).min(value);
            }
        }
        out
    }

    /// The caps of the artifact written from the tree.
    pub fn unpack(&self) -> UnpackLimits {
        UnpackLimits {
            max_total_bytes: self.max_tree_bytes,
            max_entries: self.max_files,
        }
    }
}

/// A limit that a fetch went over: which one, its value and what was seen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} exceeds the limit of {max} {} (reconciler flag {}, spec.limits.{})",
    self.seen(),
    limit.what(),
    limit.flag(),
    limit.field()
)]
pub struct LimitExceeded {
    /// The limit that was reached.
    pub limit: Limit,
    /// Its value for this fetch (after `spec.limits` tightened it).
    pub max: u64,
    /// The value that went over; for running totals, the total when the fetch stopped.
    pub value: u64,
    /// Where, when known (a path in the tree, or the object's position in the pack).
    pub at: Option<String>,
}

impl LimitExceeded {
    fn seen(&self) -> String {
        match &self.at {
            Some(at) => format!("{} {} ({at})", self.value, self.limit.what()),
            None => format!("{} {}", self.value, self.limit.what()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tightening_never_raises() {
        let base = SourceLimits::default();
        let t = base.tightened(|l| match l {
            Limit::FileSize => Some(10),
            Limit::TreeSize => Some(u64::MAX),
            _ => None,
        });
        assert_eq!(t.max_file_bytes, 10);
        assert_eq!(t.max_tree_bytes, base.max_tree_bytes);
        assert_eq!(t.max_objects, base.max_objects);
    }

    #[test]
    fn every_limit_has_distinct_names_and_a_message_naming_it() {
        let mut labels = std::collections::HashSet::new();
        for limit in Limit::ALL {
            assert!(labels.insert(limit.label()));
            let e = LimitExceeded {
                limit,
                max: 5,
                value: 7,
                at: None,
            };
            let text = e.to_string();
            assert!(text.contains("7 ") && text.contains("limit of 5"), "{text}");
            assert!(text.contains(limit.flag()) && text.contains(limit.field()));
        }
        assert_eq!(SourceLimits::default().unpack(), UnpackLimits::default());
    }
}
