//! Checks of the values serde cannot make: ranges, and keys that must agree. Each failure is
//! an [`Invalid`] naming the key to change.

use super::file::{FileConfig, ViewerConfig};
use super::Invalid;

/// Checks the values serde cannot: each message names the key.
pub(super) fn validate(c: &FileConfig) -> Result<(), Invalid> {
    let topic_safe = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    };
    if !topic_safe(&c.station.id) {
        return Err(Invalid::at("station.id", format!(
            "station.id = {:?}: use letters, digits, '-', '_' or '.' (it is part of MQTT topics)",
            c.station.id
        )));
    }
    let prefix_ok = !c.mqtt.topic_prefix.is_empty()
        && c.mqtt.topic_prefix.split('/').all(topic_safe);
    if !prefix_ok {
        return Err(Invalid::at("mqtt.topic_prefix", format!(
            "mqtt.topic_prefix = {:?}: use topic levels of letters, digits, '-', '_' or '.'",
            c.mqtt.topic_prefix
        )));
    }
    if c.mqtt.host.trim().is_empty() {
        return Err(Invalid::at("mqtt.host", "mqtt.host is empty"));
    }
    if c.mqtt.port == 0 {
        return Err(Invalid::at("mqtt.port", "mqtt.port must be 1..65535"));
    }
    let m = &c.mqtt;
    let has_password = m.password.is_some() || m.password_file.is_some();
    if has_password && m.username.is_empty() {
        return Err(Invalid::at("mqtt.password", "mqtt.password / mqtt.password_file need mqtt.username"));
    }
    if m.password.is_some() && m.password_file.is_some() {
        return Err(Invalid::at("mqtt.password", "set mqtt.password_file or mqtt.password, not both"));
    }
    let loopback = m.host == "localhost" || m.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if (has_password || !m.username.is_empty()) && m.tls.is_none() && !loopback && !m.allow_insecure_credentials {
        return Err(Invalid::at("mqtt.tls", format!(
            "mqtt: credentials would travel unencrypted to {}: configure [mqtt.tls] or set mqtt.allow_insecure_credentials = true",
            m.host
        )));
    }
    if let Some(tls) = &m.tls {
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            return Err(Invalid::at("mqtt.tls.client_cert", "mqtt.tls.client_cert and mqtt.tls.client_key go together"));
        }
    }
    if c.spool.max_bytes < 64 * 1024 {
        return Err(Invalid::at("spool.max_bytes", "spool.max_bytes must be at least 65536"));
    }
    if c.mqtt.keep_alive_secs < 5 {
        return Err(Invalid::at("mqtt.keep_alive_secs", "mqtt.keep_alive_secs must be at least 5"));
    }
    if c.pipeline.stall_timeout_secs == 0 {
        return Err(Invalid::at("pipeline.stall_timeout_secs", "pipeline.stall_timeout_secs must be at least 1"));
    }
    if c.source.max_frame_pixels < 64 {
        return Err(Invalid::at("source.max_frame_pixels", "source.max_frame_pixels must be at least 64"));
    }
    if c.source.max_frame_bytes < 1024 {
        return Err(Invalid::at("source.max_frame_bytes", "source.max_frame_bytes must be at least 1024"));
    }
    if c.pipeline.queue_capacity == 0 {
        return Err(Invalid::at("pipeline.queue_capacity", "pipeline.queue_capacity must be at least 1"));
    }
    if c.model.threads == 0 || c.model.threads > 64 {
        return Err(Invalid::at("model.threads", format!("model.threads = {}: use 1..64", c.model.threads)));
    }
    let cam = &c.source.camera;
    if cam.width == 0 || cam.height == 0 || cam.fps == 0 {
        return Err(Invalid::at("source.camera", "source.camera.width, height and fps must be positive"));
    }
    if cam.device.trim().is_empty() {
        return Err(Invalid::at("source.camera.device", "source.camera.device is empty"));
    }
    let dir = &c.source.directory;
    if !dir.fps.is_finite() || dir.fps < 0.0 {
        return Err(Invalid::at("source.directory.fps", format!("source.directory.fps = {}: use 0 (lossless) or more", dir.fps)));
    }
    if parse_log_filter(&c.log.level).is_err() {
        return Err(Invalid::at("log.level", format!("log.level = {:?}: use error, warn, info, debug or trace", c.log.level)));
    }
    let ex = &c.examination;
    if ex.enter_frames == 0 || ex.min_frames == 0 {
        return Err(Invalid::at("examination.enter_frames", "examination.enter_frames and examination.min_frames must be at least 1"));
    }
    for (key, v) in [
        ("min_span_secs", ex.min_span_secs),
        ("min_frame_gap_secs", ex.min_frame_gap_secs),
        ("leave_secs", ex.leave_secs),
        ("timeout_secs", ex.timeout_secs),
        ("ask_model_every_secs", ex.ask_model_every_secs),
    ] {
        if !v.is_finite() || !(0.0..=3600.0).contains(&v) {
            return Err(Invalid::at(format!("examination.{key}"), format!("examination.{key} = {v}: use 0..3600 seconds")));
        }
    }
    if !ex.scene_change_above.is_finite() || ex.scene_change_above <= 0.0 {
        return Err(Invalid::at("examination.scene_change_above", format!("examination.scene_change_above = {}: must be positive", ex.scene_change_above)));
    }
    if !ex.focus_relative_min.is_finite() || !(0.0..=1.0).contains(&ex.focus_relative_min) {
        return Err(Invalid::at("examination.focus_relative_min", format!("examination.focus_relative_min = {}: use 0..1", ex.focus_relative_min)));
    }
    if ex.timeout_secs <= ex.min_span_secs {
        return Err(Invalid::at("examination.timeout_secs", "examination.timeout_secs must be longer than examination.min_span_secs"));
    }
    let ch = &c.checks;
    for (key, v) in [
        ("too_dark_below", ch.too_dark_below),
        ("too_bright_clipped_above", ch.too_bright_clipped_above),
        ("glare_above", ch.glare_above),
        ("not_skin_saturation_below", ch.not_skin_saturation_below),
        ("not_skin_saturation_above", ch.not_skin_saturation_above),
        ("not_skin_red_share_below", ch.not_skin_red_share_below),
        ("lesion_contrast_min", ch.lesion_contrast_min),
        ("lesion_contrast_clear", ch.lesion_contrast_clear),
        ("lesion_contrast_faint_min", ch.lesion_contrast_faint_min),
        ("lesion_centre_share_min", ch.lesion_centre_share_min),
        ("lesion_area_max", ch.lesion_area_max),
    ] {
        if !v.is_finite() || !(0.0..=1.0).contains(&v) {
            return Err(Invalid::at(format!("checks.{key}"), format!("checks.{key} = {v}: use 0..1")));
        }
    }
    for (key, v) in [
        ("not_skin_texture_above", ch.not_skin_texture_above),
        ("lesion_centre_texture_min", ch.lesion_centre_texture_min),
        ("lesion_centre_texture_faint_min", ch.lesion_centre_texture_faint_min),
        ("motion_max_px", ch.motion_max_px),
        ("focus_min", ch.focus_min),
    ] {
        if !v.is_finite() || v < 0.0 {
            return Err(Invalid::at(format!("checks.{key}"), format!("checks.{key} = {v}: use 0 or more")));
        }
    }
    let viewer = &c.viewer;
    if viewer.enabled {
        let addr = viewer.listen_addr().map_err(|m| Invalid::at("viewer.listen", m))?;
        // A page on the clinic network shows examinations: only to someone with the password.
        if !addr.ip().is_loopback() && viewer.token_file.is_none() {
            return Err(Invalid::at("viewer.token_file", format!(
                "viewer.listen = {:?} is reachable from the network: set viewer.token_file (a file holding the password the screen must give) or listen on 127.0.0.1",
                viewer.listen
            )));
        }
        viewer_limits(viewer)?;
    }
    dicom(&c.dicom)?;
    let syn = &c.source.synthetic;
    if !syn.fps.is_finite() || syn.fps <= 0.0 {
        return Err(Invalid::at("source.synthetic.fps", format!("source.synthetic.fps = {}: must be positive", syn.fps)));
    }
    if syn.width < 16 || syn.height < 16 || syn.width > 8192 || syn.height > 8192 {
        return Err(Invalid::at("source.synthetic", "source.synthetic.width and height must be 16..8192"));
    }
    Ok(())
}


/// An AE title: 1..16 characters of the DICOM default repertoire, no backslash or control
/// characters, not only spaces.
fn ae_title(key: &str, ae: &str) -> Result<(), Invalid> {
    let ok = !ae.trim().is_empty() && ae.len() <= 16 && ae.chars().all(|c| c.is_ascii() && !c.is_ascii_control() && c != '\\');
    if ok {
        Ok(())
    } else {
        Err(Invalid::at(key, format!("{key} = {ae:?}: an AE title is 1 to 16 ASCII characters, no backslash")))
    }
}

/// `[dicom]`: checked when enabled (an unused section may stay half filled in); its worklist
/// whenever it is there (the `context` command uses it with or without the archive).
fn dicom(d: &super::DicomConfig) -> Result<(), Invalid> {
    if let Some(w) = &d.worklist {
        ae_title("dicom.ae_title", &d.ae_title)?;
        ae_title("dicom.worklist.peer_ae_title", &w.peer_ae_title)?;
        if w.host.trim().is_empty() || w.port == 0 {
            return Err(Invalid::at("dicom.worklist.host", "dicom.worklist.host and port must name the worklist provider"));
        }
        if let Some(tls) = &w.tls {
            if tls.client_cert.is_some() != tls.client_key.is_some() {
                return Err(Invalid::at("dicom.worklist.tls.client_cert", "dicom.worklist.tls.client_cert and dicom.worklist.tls.client_key go together"));
            }
        }
        if !(1..=600).contains(&d.timeout_secs) {
            return Err(Invalid::at("dicom.timeout_secs", format!("dicom.timeout_secs = {}: use 1..600", d.timeout_secs)));
        }
    }
    if !d.enabled {
        return Ok(());
    }
    ae_title("dicom.ae_title", &d.ae_title)?;
    ae_title("dicom.peer_ae_title", &d.peer_ae_title)?;
    if d.host.trim().is_empty() {
        return Err(Invalid::at("dicom.host", "dicom.host is empty: name the archive's host"));
    }
    if d.port == 0 {
        return Err(Invalid::at("dicom.port", "dicom.port must be 1..65535"));
    }
    if !(1..=600).contains(&d.timeout_secs) {
        return Err(Invalid::at("dicom.timeout_secs", format!("dicom.timeout_secs = {}: use 1..600", d.timeout_secs)));
    }
    if !(1..=86400).contains(&d.retry_max_secs) {
        return Err(Invalid::at("dicom.retry_max_secs", format!("dicom.retry_max_secs = {}: use 1..86400", d.retry_max_secs)));
    }
    if let Some(tls) = &d.tls {
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            return Err(Invalid::at("dicom.tls.client_cert", "dicom.tls.client_cert and dicom.tls.client_key go together"));
        }
    }
    Ok(())
}

/// The connection caps, timeouts and login limit: each must leave the screen usable.
fn viewer_limits(v: &ViewerConfig) -> Result<(), Invalid> {
    if !(1..=4096).contains(&v.max_connections) {
        return Err(Invalid::at("viewer.max_connections", format!("viewer.max_connections = {}: use 1..4096 (each is a file descriptor)", v.max_connections)));
    }
    if v.max_connections_per_client < 1 || v.max_connections_per_client > v.max_connections {
        return Err(Invalid::at("viewer.max_connections_per_client", format!("viewer.max_connections_per_client = {}: use 1..viewer.max_connections", v.max_connections_per_client)));
    }
    for (key, secs) in [("header_timeout_secs", v.header_timeout_secs), ("idle_timeout_secs", v.idle_timeout_secs)] {
        if !(1..=3600).contains(&secs) {
            return Err(Invalid::at(format!("viewer.{key}"), format!("viewer.{key} = {secs}: use 1..3600")));
        }
    }
    if v.max_failed_logins < 1 {
        return Err(Invalid::at("viewer.max_failed_logins", "viewer.max_failed_logins must be at least 1"));
    }
    if !(1..=86400).contains(&v.login_block_secs) {
        return Err(Invalid::at("viewer.login_block_secs", format!("viewer.login_block_secs = {}: use 1..86400", v.login_block_secs)));
    }
    for name in &v.allowed_hosts {
        let bad = name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control() || "/@?#".contains(c));
        if bad {
            return Err(Invalid::at("viewer.allowed_hosts", format!("viewer.allowed_hosts: {name:?} is not a host name (e.g. \"station-3.clinic.lan\")")));
        }
    }
    Ok(())
}

/// Parses a level or filter directive (`info`, `lesiond=debug,rumqttc=warn`). tracing-subscriber
/// 0.3 panics on some non-ASCII input (it slices the string at byte offsets that can fall inside
/// a character), and a directive is ASCII anyway, so anything else is refused before it gets there.
pub fn parse_log_filter(directives: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    if !directives.is_ascii() {
        return Err("not ASCII".into());
    }
    tracing_subscriber::EnvFilter::try_new(directives).map_err(|e| e.to_string())
}
