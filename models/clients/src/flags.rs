//! The three build-time flags of spec §9.1, read from a lookup function so
//! that nothing here touches the process environment.

use crate::switches::ClientSwitches;

/// A client surface with its own flag and its own watermark store.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Surface {
    Web,
    Mobile,
    Desktop,
}

impl Surface {
    pub const ALL: [Surface; 3] = [Surface::Web, Surface::Mobile, Surface::Desktop];

    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Web => "web",
            Surface::Mobile => "mobile",
            Surface::Desktop => "desktop",
        }
    }

    /// The build-time variable that turns the Khala lane on.
    pub fn flag_name(self) -> &'static str {
        match self {
            Surface::Web => "VITE_KHALA_SYNC_ENABLED",
            Surface::Mobile => "EXPO_PUBLIC_KHALA_SYNC_ENABLED",
            Surface::Desktop => "OA_DESKTOP_KHALA_SYNC_ENABLED",
        }
    }

    /// Whether the surface's Khala lane is on, given the variables `lookup`
    /// answers for.
    pub fn flag_enabled(
        self,
        lookup: impl Fn(&str) -> Option<String>,
        switches: ClientSwitches,
    ) -> bool {
        self.reads_flag(lookup(self.flag_name()).as_deref(), switches)
    }

    /// Whether the surface's Khala lane is on when its variable holds
    /// `value` (`None`: unset), by the surface's own reading (spec §9.1).
    pub fn reads_flag(self, value: Option<&str>, switches: ClientSwitches) -> bool {
        match self {
            Surface::Web if switches.planted_web_flag_lenient => {
                value.is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
            }
            Surface::Web | Surface::Mobile => strict_true(value),
            Surface::Desktop if switches.b23_desktop_flag_strict => {
                // The preload bridge: `process.env.X === "true"`.
                strict_true(value)
            }
            Surface::Desktop => desktop_config_flag(value).unwrap_or(false),
        }
    }
}

impl std::fmt::Display for Surface {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// `value === "true"`: Vite's and Expo's reading, and the desktop preload's.
pub fn strict_true(value: Option<&str>) -> bool {
    value == Some("true")
}

/// The desktop config parser: `true/1/yes` on, `false/0/no` off, anything
/// else (or absent) is no answer and the default (off) applies. Case and
/// surrounding blanks are ignored `[INFERRED]`: the spec lists the words only.
pub fn desktop_config_flag(value: Option<&str>) -> Option<bool> {
    match value?.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use khala_runtime::Profile;

    /// `(value, web, mobile, desktop legacy, desktop hardened)`.
    const TABLE: &[(Option<&str>, bool, bool, bool, bool)] = &[
        (None, false, false, false, false),
        (Some(""), false, false, false, false),
        (Some("true"), true, true, true, true),
        (Some("TRUE"), false, false, false, true),
        (Some(" true"), false, false, false, true),
        (Some("1"), false, false, false, true),
        (Some("yes"), false, false, false, true),
        (Some("false"), false, false, false, false),
        (Some("0"), false, false, false, false),
        (Some("no"), false, false, false, false),
        (Some("on"), false, false, false, false),
    ];

    fn check(surface: Surface, value: Option<&str>, profile: Profile) -> bool {
        let name = surface.flag_name();
        surface.flag_enabled(
            |asked| (asked == name).then(|| value.map(str::to_owned)).flatten(),
            ClientSwitches::new(profile),
        )
    }

    #[test]
    fn each_value_of_each_flag_reads_as_spec_9_1_says() {
        for &(value, web, mobile, desktop_legacy, desktop_hardened) in TABLE {
            for profile in Profile::ALL {
                assert_eq!(check(Surface::Web, value, profile), web, "web {value:?}");
                assert_eq!(
                    check(Surface::Mobile, value, profile),
                    mobile,
                    "mobile {value:?}"
                );
            }
            assert_eq!(
                check(Surface::Desktop, value, Profile::Legacy),
                desktop_legacy,
                "desktop legacy {value:?}"
            );
            assert_eq!(
                check(Surface::Desktop, value, Profile::Hardened),
                desktop_hardened,
                "desktop hardened {value:?}"
            );
        }
    }

    #[test]
    fn a_flag_reads_only_its_own_variable() {
        let lookup = |name: &str| (name == "VITE_KHALA_SYNC_ENABLED").then(|| "true".to_owned());
        let switches = ClientSwitches::new(Profile::Hardened);
        assert!(Surface::Web.flag_enabled(lookup, switches));
        assert!(!Surface::Mobile.flag_enabled(lookup, switches));
        assert!(!Surface::Desktop.flag_enabled(lookup, switches));
    }

    #[test]
    fn the_planted_lenient_web_flag_reads_padded_and_upper_case_true_as_on() {
        let switches = ClientSwitches {
            planted_web_flag_lenient: true,
            ..ClientSwitches::new(Profile::Hardened)
        };
        for value in ["true", " true", "TRUE", "True "] {
            assert!(Surface::Web.reads_flag(Some(value), switches), "{value:?}");
            assert!(!Surface::Mobile.reads_flag(Some(value), switches) || value == "true");
        }
        assert!(!Surface::Web.reads_flag(Some("1"), switches));
        assert!(!Surface::Web.reads_flag(None, switches));
    }

    #[test]
    fn the_desktop_config_parser_answers_only_for_its_words() {
        assert_eq!(desktop_config_flag(Some("1")), Some(true));
        assert_eq!(desktop_config_flag(Some("no")), Some(false));
        assert_eq!(desktop_config_flag(Some("maybe")), None);
        assert_eq!(desktop_config_flag(None), None);
    }
}
