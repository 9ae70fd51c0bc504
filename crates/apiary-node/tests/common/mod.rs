//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used, dead_code)]

use apiary::Apiary;

/// Creates the tutorial's `analytics.events.clicks`, partitioned by country.
pub async fn create_clicks_frame(ap: &Apiary) {
    ap.create_hive("analytics").await.unwrap();
    ap.create_box("analytics", "events").await.unwrap();
    ap.create_frame(
        "analytics",
        "events",
        "clicks",
        &[
            ("event_id", "int64"),
            ("user_id", "utf8"),
            ("page", "utf8"),
            ("duration_ms", "int64"),
            ("country", "utf8"),
        ],
        &["country"],
    )
    .await
    .unwrap();
}
