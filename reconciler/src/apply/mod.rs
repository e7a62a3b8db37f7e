//! The apply stage: staged server-side apply, inventory, prune and health (issue 7).
