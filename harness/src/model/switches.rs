//! The defect switches of both model crates (spec §15) as one named set, so
//! that a case can play under `legacy` with some of them turned off: that
//! is how `bench detect` learns which defect a finding needs.

use khala_clients::ClientSwitches;
use khala_runtime::{Profile, Switches};

/// The switches of the client lanes, by name (`ClientSwitches` has no
/// serde form: it also carries a planted defect).
const CLIENT_SWITCHES: [&str; 3] = [
    "b12_no_client_heartbeat",
    "b13_ui_merge_ignores_version",
    "b23_desktop_flag_strict",
];

/// Every defect switch a case plays with: the runtime's (projection,
/// sinks, sync server, auditor) and the client lanes'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefectSwitches {
    pub runtime: Switches,
    pub clients: ClientSwitches,
}

/// A switch name no model has.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown defect switch `{0}`")]
pub struct UnknownSwitch(pub String);

impl DefectSwitches {
    pub fn of(profile: Profile) -> Self {
        DefectSwitches {
            runtime: profile.switches(),
            clients: ClientSwitches::new(profile),
        }
    }

    /// Every switch's name: the runtime's, then the clients'.
    pub fn names() -> Vec<String> {
        runtime_map(Switches::LEGACY)
            .keys()
            .cloned()
            .chain(CLIENT_SWITCHES.iter().map(|name| (*name).to_owned()))
            .collect()
    }

    /// These switches with every one of `names` off.
    pub fn turned_off(self, names: &[String]) -> Result<Self, UnknownSwitch> {
        let mut runtime = runtime_map(self.runtime);
        let mut clients = self.clients;
        for name in names {
            match name.as_str() {
                "b12_no_client_heartbeat" => clients.b12_no_client_heartbeat = false,
                "b13_ui_merge_ignores_version" => clients.b13_ui_merge_ignores_version = false,
                "b23_desktop_flag_strict" => clients.b23_desktop_flag_strict = false,
                other => match runtime.get_mut(other) {
                    Some(on) => *on = serde_json::Value::Bool(false),
                    None => return Err(UnknownSwitch(other.to_owned())),
                },
            }
        }
        let runtime = serde_json::from_value(serde_json::Value::Object(runtime))
            .expect("the map was made from `Switches`, with its own keys");
        Ok(DefectSwitches { runtime, clients })
    }
}

/// `Switches` as its serde map: one boolean per field name.
fn runtime_map(switches: Switches) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(switches) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => unreachable!("`Switches` serialises as a map of booleans"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_switch_is_named_once_and_turning_all_off_gives_hardened() {
        let names = DefectSwitches::names();
        assert_eq!(names.len(), 21);
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        let off = DefectSwitches::of(Profile::Legacy).turned_off(&names);
        assert_eq!(off, Ok(DefectSwitches::of(Profile::Hardened)));
    }

    #[test]
    fn one_switch_off_changes_that_switch_only_and_unknown_names_are_refused() {
        let legacy = DefectSwitches::of(Profile::Legacy);
        let off = legacy
            .turned_off(&["b1_fanout_partial_success".to_owned()])
            .unwrap();
        assert!(!off.runtime.b1_fanout_partial_success);
        assert!(off.runtime.b3_sink_switch_skips_backfill);
        assert_eq!(off.clients, legacy.clients);
        let off = legacy
            .turned_off(&["b13_ui_merge_ignores_version".to_owned()])
            .unwrap();
        assert!(!off.clients.b13_ui_merge_ignores_version);
        assert_eq!(off.runtime, legacy.runtime);
        assert_eq!(
            legacy.turned_off(&["b99".to_owned()]),
            Err(UnknownSwitch("b99".to_owned()))
        );
    }
}
