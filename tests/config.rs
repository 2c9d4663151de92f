//! Limits kept in a TOML file, per model, drive the one-line stack (feature `serde`).
#![cfg(feature = "serde")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt};
use tower_quota::limit::{KeyBy, Model};
use tower_quota::sim::{Simulator, Tier as SimTier};
use tower_quota::{QuotaLayer, Tier};

const CONFIG: &str = r#"
key_by = "api-key"

[models."meta-llama/llama-3.3-70b-instruct:free"]
name = "openrouter-free"
quotas = [{ limit = 20, window = "1m" }, { limit = 50, per = "utc-day" }]

[models."deepseek/deepseek-chat-v3-0324:free"]
name = "openrouter-free"
quotas = [{ limit = 20, window = "60s" }, { limit = 50, per = "utc-day" }]
"#;

#[derive(serde::Deserialize)]
struct Config {
    key_by: KeyBy,
    models: HashMap<String, Tier>,
}

fn request(model: &str) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::post("/api/v1/chat/completions")
        .header("authorization", "Bearer sk-a")
        .body(Full::new(Bytes::from(format!(r#"{{"model":"{model}"}}"#))))
        .unwrap();
    req.extensions_mut().insert(Model::new(model));
    req
}

#[tokio::test(start_paused = true)]
async fn per_model_tiers_from_toml() {
    let config: Config = toml::from_str(CONFIG).unwrap();
    assert_eq!(
        config.models["meta-llama/llama-3.3-70b-instruct:free"],
        tower_quota::tiers::openrouter::free()
    );
    // Same name, same quotas: one tier, so both free models share the account's windows, as
    // on OpenRouter.
    let models = Arc::new(config.models);
    let layer = QuotaLayer::selecting(move |head| {
        head.model().and_then(|m| models.get(m.as_str()).cloned())
    })
    .key_by(config.key_by);

    let sim = Simulator::builder()
        .key("sk-a", SimTier::openrouter_free())
        .build();
    let client = ServiceBuilder::new().layer(layer).service(sim.clone());

    let start = tokio::time::Instant::now();
    for i in 0..24 {
        let model = if i % 2 == 0 {
            "meta-llama/llama-3.3-70b-instruct:free"
        } else {
            "deepseek/deepseek-chat-v3-0324:free"
        };
        let resp = client.clone().oneshot(request(model)).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert!(start.elapsed() >= Duration::from_secs(60));
    // A model without a tier is not paced.
    let before = tokio::time::Instant::now();
    let resp = client
        .clone()
        .oneshot(request("openai/gpt-4o"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(before.elapsed(), Duration::ZERO);

    assert_eq!(sim.stats().rate_limited, 0);
    sim.check_invariants().unwrap();
}
