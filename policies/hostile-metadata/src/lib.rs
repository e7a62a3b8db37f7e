//! A hostile policy for the host's tests: `metadata`, which the host calls when it loads a
//! component, sleeps in a loop forever (each sleep is `wasi:clocks/monotonic-clock`
//! `subscribe-duration` + `pollable.block`). The host must refuse to load it at the call's
//! deadline, naming the `metadata` export.

use gitops_policy_sdk::{
    ConfigError, Context, Metadata, Object, Policy, PolicyError, Value, Violation,
};
use std::time::Duration;

/// The policy.
pub struct SleepyMetadata;

impl Policy for SleepyMetadata {
    type Config = ();

    fn metadata() -> Metadata {
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn parse_config(_config: &Value) -> Result<(), ConfigError> {
        Ok(())
    }

    fn transform(
        _ctx: &Context,
        _config: &(),
        objects: Vec<Object>,
    ) -> Result<Vec<Object>, PolicyError> {
        Ok(objects)
    }

    fn validate(_ctx: &Context, _config: &(), _objects: &[Object]) -> Vec<Violation> {
        Vec::new()
    }
}

gitops_policy_sdk::export_policy!(SleepyMetadata);
