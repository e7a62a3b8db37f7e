//! The source stage: git fetch with gix, content-addressed artifacts, artifact serving (issue 3).
