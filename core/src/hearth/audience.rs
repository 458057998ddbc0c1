//! The session's part in segments and notification decisions, and the
//! methods apps call for them. The logic is in `crate::audience`; this file
//! hands it the parts of the session it reads.

use log::debug;

use super::{Hearth, Session};
use crate::audience::notify::{self, NotificationCandidate, NotificationDecision, NotificationPolicy};
use crate::audience::segments::{self, Activity, SegmentConfig, SegmentReportOutcome, Segments};
use crate::error::{Error, HearthError, Result};
use crate::store::history::now_ms;
use crate::store::settings::PrivacySettings;

impl Session {
    pub(crate) fn segment_config(&self) -> Result<SegmentConfig> {
        segments::load_config(&self.store)
    }

    /// The activity summary, built from the history on first use.
    fn activity(&mut self) -> Result<&Activity> {
        if self.activity.is_none() {
            let started = std::time::Instant::now();
            let built = Activity::build(&self.store)?;
            debug!("activity summarized ({} sessions) in {:?}", built.session_count(), started.elapsed());
            self.activity = Some(built);
        }
        Ok(self.activity.get_or_insert_with(Activity::default))
    }

    pub(crate) fn segments_at(&mut self, as_of: i64) -> Result<Segments> {
        let config = self.segment_config()?;
        self.activity()?;
        let activity = self.activity.as_ref().ok_or_else(|| Error::Internal("activity missing".into()))?;
        Ok(segments::compute(as_of, &config, activity, &self.profile, &self.settings))
    }

    pub(crate) fn segment_report(&mut self) -> Result<SegmentReportOutcome> {
        if !self.settings.segment_reports_opt_in {
            return Ok(SegmentReportOutcome::NoConsent);
        }
        let config = self.segment_config()?;
        let now = self.segments_at(now_ms())?;
        let report = crate::audience::report::report(&mut self.store, &now, &config)?;
        Ok(SegmentReportOutcome::Report { report })
    }

    fn notify_context(&mut self) -> notify::Context<'_> {
        notify::Context {
            store: &mut self.store,
            settings: &self.settings,
            catalog: &self.catalog,
            profile: &self.profile,
        }
    }
}

#[uniffi::export]
impl Hearth {
    /// The user's segments now, computed on the device.
    pub fn segments(&self) -> Result<Segments, HearthError> {
        self.with(|s| s.segments_at(now_ms()))
    }

    /// The user's segments as of `as_of_ms` (meant to be at or after the
    /// newest event; see the README).
    pub fn segments_at(&self, as_of_ms: i64) -> Result<Segments, HearthError> {
        self.with(|s| {
            segments::check_as_of(as_of_ms)?;
            s.segments_at(as_of_ms)
        })
    }

    /// The thresholds in force (the defaults until `set_segment_config`).
    pub fn segment_config(&self) -> Result<SegmentConfig, HearthError> {
        self.with(|s| s.segment_config())
    }

    /// Replaces the thresholds and the report's schema and epsilon. A
    /// config that does not validate fails with `InvalidInput` and changes
    /// nothing.
    pub fn set_segment_config(&self, config: SegmentConfig) -> Result<(), HearthError> {
        self.with(|s| segments::save_config(&mut s.store, &config))
    }

    /// Lets segment reports leave the device (off until the user agrees).
    pub fn set_segment_reports_opt_in(&self, opt_in: bool) -> Result<(), HearthError> {
        self.with(|s| s.save_settings(PrivacySettings { segment_reports_opt_in: opt_in, ..s.settings.clone() }))
    }

    /// The device's segment memberships, randomized here at the configured
    /// epsilon, for a federated round to send; `NoConsent` unless the user
    /// opted in. Asked again with unchanged memberships, it repeats the
    /// same report (and spends nothing).
    pub fn segment_report(&self) -> Result<SegmentReportOutcome, HearthError> {
        self.with(|s| s.segment_report())
    }
}

#[uniffi::export]
impl Hearth {
    /// May the app send this message now (or at `candidate.at_ms`)? An
    /// allowed candidate is counted as sent (caps hold across restarts); a
    /// held one comes with the reason and, unless of `Low` urgency, the
    /// earliest time it would be allowed. A candidate with an unknown time
    /// zone or bad fields fails with `InvalidInput` and counts nothing.
    pub fn should_notify(&self, candidate: NotificationCandidate) -> Result<NotificationDecision, HearthError> {
        self.with(|s| s.notify_context().should_notify(&candidate))
    }

    /// The caps and quiet hours in force (the defaults until set).
    pub fn notification_policy(&self) -> Result<NotificationPolicy, HearthError> {
        self.with(|s| notify::load_policy(&s.store))
    }

    /// Replaces the caps and quiet hours. A policy that does not validate
    /// fails with `InvalidInput` and changes nothing.
    pub fn set_notification_policy(&self, policy: NotificationPolicy) -> Result<(), HearthError> {
        self.with(|s| notify::save_policy(&mut s.store, &policy))
    }

    /// The user's notification toggle (on by default).
    pub fn set_notifications_enabled(&self, enabled: bool) -> Result<(), HearthError> {
        self.with(|s| s.save_settings(PrivacySettings { notifications_enabled: enabled, ..s.settings.clone() }))
    }
}
