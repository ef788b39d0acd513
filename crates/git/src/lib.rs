//! Git access for deep-review: resolving revisions, listing commits, producing the diff
//! under review and checking out worktrees, plus parsing of unified diffs.
//!
//! Git is driven through its command line: it is present wherever a repository is, it
//! honours the user's configuration, and it keeps this crate free of a C dependency.

mod diff;
mod mirror;
mod paths;
mod repository;

pub use diff::{
    parse_unified_diff, split_by_file, ChangeKind, DiffLine, FileDiff, FileSection, Hunk, LineKind,
};
pub use mirror::{is_local_git_url, MirrorCache};
pub use paths::{is_test_path, PathFilter, PatternError};
pub use repository::{remove_orphaned_worktree, GitError, Repository, Worktree, EMPTY_TREE};
