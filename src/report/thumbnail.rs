//! A downscaled JPEG of a classified frame, published (QoS 0, best effort) on
//! `<prefix>/<station>/frame/<result_id>` when `mqtt.publish_frames` is on.

/// At most this wide: enough for a subscriber to see what was judged.
pub const MAX_WIDTH: u32 = 320;

#[derive(Debug)]
pub struct Thumbnail {
    /// The classification it belongs to.
    pub result_id: String,
    pub jpeg: Vec<u8>,
}
