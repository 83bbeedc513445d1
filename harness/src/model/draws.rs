//! What two step kinds draw within themselves, as a scenario weighs it:
//! the raw strings a person might put in a client flag's variable
//! (`[flag_values]`, drawn by `client_flag`) and the kinds of Convex fault
//! (`[convex_faults]`, drawn by `fault_convex`). Plain data: each choice's
//! TOML name and what it stands for.

use crate::model::case::{ConvexFault, Outage, Step};

/// One way of writing a client flag's build-time variable (spec §9.1):
/// only `"true"` turns the web and mobile lanes on; the desktop's config
/// parser also takes `1` and `yes`, in any case and padding; the rest are
/// off everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FlagSpelling {
    True,
    UpperTrue,
    TitleTrue,
    PaddedTrue,
    One,
    Yes,
    On,
    False,
    Zero,
    No,
    Empty,
    Unset,
}

impl FlagSpelling {
    /// Every spelling, in the order scenarios list them.
    pub const ALL: [FlagSpelling; 12] = [
        FlagSpelling::True,
        FlagSpelling::UpperTrue,
        FlagSpelling::TitleTrue,
        FlagSpelling::PaddedTrue,
        FlagSpelling::One,
        FlagSpelling::Yes,
        FlagSpelling::On,
        FlagSpelling::False,
        FlagSpelling::Zero,
        FlagSpelling::No,
        FlagSpelling::Empty,
        FlagSpelling::Unset,
    ];

    /// The name scenario files use.
    pub fn name(self) -> &'static str {
        match self {
            FlagSpelling::True => "true",
            FlagSpelling::UpperTrue => "upper_true",
            FlagSpelling::TitleTrue => "title_true",
            FlagSpelling::PaddedTrue => "padded_true",
            FlagSpelling::One => "one",
            FlagSpelling::Yes => "yes",
            FlagSpelling::On => "on",
            FlagSpelling::False => "false",
            FlagSpelling::Zero => "zero",
            FlagSpelling::No => "no",
            FlagSpelling::Empty => "empty",
            FlagSpelling::Unset => "unset",
        }
    }

    /// The variable's raw value; `None`: not set at all.
    pub fn raw(self) -> Option<&'static str> {
        match self {
            FlagSpelling::True => Some("true"),
            FlagSpelling::UpperTrue => Some("TRUE"),
            FlagSpelling::TitleTrue => Some("True"),
            FlagSpelling::PaddedTrue => Some(" true"),
            FlagSpelling::One => Some("1"),
            FlagSpelling::Yes => Some("yes"),
            FlagSpelling::On => Some("on"),
            FlagSpelling::False => Some("false"),
            FlagSpelling::Zero => Some("0"),
            FlagSpelling::No => Some("no"),
            FlagSpelling::Empty => Some(""),
            FlagSpelling::Unset => None,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|spelling| spelling.name() == name)
    }

    /// Every name, comma separated, for error messages.
    pub fn names() -> String {
        Self::ALL.map(FlagSpelling::name).join(", ")
    }
}

/// One kind of Convex fault a `fault_convex` step plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConvexFaultKind {
    Reset,
    Timeout,
    Delay,
    /// The backend paused (`ConvexOutage { outage: pause }`).
    Pause,
    /// The mutation throws: HTTP 200 with `status: "error"`.
    FunctionError200,
    /// The mutation throws, answered as HTTP 560.
    FunctionError560,
}

impl ConvexFaultKind {
    pub const ALL: [ConvexFaultKind; 6] = [
        ConvexFaultKind::Reset,
        ConvexFaultKind::Timeout,
        ConvexFaultKind::Delay,
        ConvexFaultKind::Pause,
        ConvexFaultKind::FunctionError200,
        ConvexFaultKind::FunctionError560,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ConvexFaultKind::Reset => "reset",
            ConvexFaultKind::Timeout => "timeout",
            ConvexFaultKind::Delay => "delay",
            ConvexFaultKind::Pause => "pause",
            ConvexFaultKind::FunctionError200 => "function_error_200",
            ConvexFaultKind::FunctionError560 => "function_error_560",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    pub fn names() -> String {
        Self::ALL.map(ConvexFaultKind::name).join(", ")
    }

    /// The step that plays this fault.
    pub fn step(self) -> Step {
        let fault = match self {
            ConvexFaultKind::Pause => {
                return Step::ConvexOutage {
                    outage: Outage::Pause,
                };
            }
            ConvexFaultKind::Reset => ConvexFault::Reset,
            ConvexFaultKind::Timeout => ConvexFault::Timeout,
            ConvexFaultKind::Delay => ConvexFault::Delay,
            ConvexFaultKind::FunctionError200 => ConvexFault::FunctionError200,
            ConvexFaultKind::FunctionError560 => ConvexFault::FunctionError560,
        };
        Step::BreakConvex { fault }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_choice_is_named_once_and_read_back() {
        for spelling in FlagSpelling::ALL {
            assert_eq!(FlagSpelling::from_name(spelling.name()), Some(spelling));
        }
        for kind in ConvexFaultKind::ALL {
            assert_eq!(ConvexFaultKind::from_name(kind.name()), Some(kind));
        }
        let raws: std::collections::BTreeSet<Option<&str>> = FlagSpelling::ALL
            .iter()
            .map(|spelling| spelling.raw())
            .collect();
        assert_eq!(raws.len(), FlagSpelling::ALL.len());
        assert_eq!(FlagSpelling::from_name("maybe"), None);
        assert_eq!(ConvexFaultKind::from_name("nope"), None);
    }
}
