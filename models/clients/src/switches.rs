//! The client-side defects of spec §15 as named switches: `legacy` turns
//! each on (the 2026-02 clients), `hardened` turns each off (the fix).

use khala_runtime::Profile;

/// One flag per client defect. `true` reproduces the original behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSwitches {
    /// B12: the TS client never sends `sync:heartbeat`, so the server closes
    /// the channel 60 s after the last subscribe and the client ignores the
    /// `phx_close`; live updates stop. The fix sends `sync:heartbeat` on every
    /// `tick()` and rejoins when the channel is closed anyway.
    pub b12_no_client_heartbeat: bool,
    /// B13: `onUpdateBatch` hands the UI every normalised update, including
    /// the ones the doc cache rejected, and the web/mobile merge never
    /// compares against the row already shown, so an older update can
    /// overwrite a newer one. The fix merges an update only when its
    /// `doc_version` is not below the shown row's.
    pub b13_ui_merge_ignores_version: bool,
    /// B23: the desktop preload bridge passes `value === "true"` to the
    /// renderer, so `OA_DESKTOP_KHALA_SYNC_ENABLED=1` (or `yes`) reads as off
    /// even though the config parser says on. The fix uses the config
    /// parser's answer.
    pub b23_desktop_flag_strict: bool,
    /// Not a defect of the original and never set by a profile: a defect
    /// planted by the harness's tests, to show that an error a lane raises
    /// is a finding of the system under test. Today's lane fails to apply
    /// any update batch carrying this watermark or a higher one.
    pub planted_apply_fails_from: Option<i64>,
    /// Not a defect of the original and never set by a profile: a defect
    /// planted by the harness's tests, which only raw flag strings reveal.
    /// The web flag is read trimmed and case-insensitively, so `" true"`
    /// and `"TRUE"` turn the Khala lane on where Vite's `=== "true"` does
    /// not.
    pub planted_web_flag_lenient: bool,
    /// Not a defect of the original and never set by a profile: a defect
    /// planted by the harness's tests, which only pointer-mode updates
    /// reveal. Today's lane takes a batch of pointer updates
    /// (`payload: null, hydration_required: true`) as if it needed no
    /// hydration: no HTTP reload, and the merge leaves the payload-less
    /// updates out, so the view keeps what it showed.
    pub planted_pointer_batch_merged: bool,
    /// Not a defect of the original and never set by a profile: a defect
    /// planted by the harness's tests, which only a batch holding several
    /// versions of one document reveals. Today's lane merges the lowest
    /// version of each document in the batch instead of the highest.
    pub planted_batch_merge_keeps_oldest: bool,
    /// Not a defect of the original and never set by a profile: a defect
    /// planted by the harness's tests, which only a new payload at an
    /// unchanged `doc_version` reveals (a rebuild, an event gap). Today's
    /// lane leaves out of the merge every update whose `doc_version` equals
    /// the row shown.
    pub planted_merge_skips_equal_version: bool,
}

impl ClientSwitches {
    pub fn new(profile: Profile) -> Self {
        let on = profile == Profile::Legacy;
        ClientSwitches {
            b12_no_client_heartbeat: on,
            b13_ui_merge_ignores_version: on,
            b23_desktop_flag_strict: on,
            planted_apply_fails_from: None,
            planted_web_flag_lenient: false,
            planted_pointer_batch_merged: false,
            planted_batch_merge_keeps_oldest: false,
            planted_merge_skips_equal_version: false,
        }
    }
}

impl From<Profile> for ClientSwitches {
    fn from(profile: Profile) -> Self {
        ClientSwitches::new(profile)
    }
}
