//! An `async_openai::Client` whose HTTP goes through `QuotaHttpService`, against the simulated
//! OpenRouter served on loopback: the free tier (20 requests per rolling "minute", scaled down
//! to 2 s here). Twenty-five `chat().create()` calls go out at once; every one must come back
//! with its completion, and the simulator must never have answered a 429 — async-openai's own
//! types, the crate's pacing. Exits non-zero on failure.
//!
//! Runs offline: `cargo run --example openai_client`.

use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
};
use async_openai::Client;
use tokio::time::Instant;
use tower_quota::limit::KeyBy;
use tower_quota::openai::QuotaHttpService;
use tower_quota::sim::{Simulator, Tier as SimTier};
use tower_quota::{Quota, QuotaLayer, Tier};

const MODEL: &str = "meta-llama/llama-3.3-70b-instruct:free";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let minute = Duration::from_secs(2);
    let simulator = Simulator::builder()
        .key("sk-or-v1-demo", SimTier::openrouter_free())
        .minute(minute)
        .seed(7)
        .build();
    let (addr, server) = simulator.serve(([127, 0, 0, 1], 0)).await?;

    // The simulator's 20 per minute, with the minute scaled down; keyed by API key and the
    // model that async-openai writes in the body (the stack reads it from there).
    let tier = Tier::new("openrouter-free (demo speed)").with_quota(Quota::new(20, minute));
    let layer = QuotaLayer::new(tier)
        .key_by(KeyBy::ApiKeyAndModel)
        .with_margin(Duration::from_millis(250));
    let config = OpenAIConfig::new()
        .with_api_base(format!("http://{addr}/api/v1"))
        .with_api_key("sk-or-v1-demo");
    let client = Client::with_config(config).with_http_service(QuotaHttpService::from(layer));

    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..25 {
        let client = client.clone();
        let request = CreateChatCompletionRequestArgs::default()
            .model(MODEL)
            .max_completion_tokens(64u32)
            .messages([ChatCompletionRequestUserMessageArgs::default()
                .content(format!("Say hello to #{i}."))
                .build()?
                .into()])
            .build()?;
        tasks.spawn(async move { (i, client.chat().create(request).await) });
    }
    let mut rows = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (i, answer) = done?;
        let answer = answer?;
        let tokens = answer.usage.as_ref().map_or(0, |u| u.total_tokens);
        rows.push((i, answer.choices.len(), tokens, start.elapsed()));
    }
    rows.sort_by_key(|r| r.0);

    println!("call  choices  tokens  done after");
    for (i, choices, tokens, at) in &rows {
        println!(
            "{i:>4}  {choices:>7}  {tokens:>6}  {:>9.2}s",
            at.as_secs_f64()
        );
    }
    let stats = simulator.stats();
    let elapsed = start.elapsed();
    println!(
        "\n{} completions in {:.2}s; the simulator answered {} 429s",
        rows.len(),
        elapsed.as_secs_f64(),
        stats.rate_limited
    );
    server.shutdown().await;

    if rows.len() != 25 || rows.iter().any(|r| r.1 == 0) {
        return Err("a call came back without its completion".into());
    }
    if stats.rate_limited != 0 {
        return Err(format!("{} 429s: the pacing tripped a window", stats.rate_limited).into());
    }
    if elapsed < minute {
        return Err("25 calls on 20 per window finished within one window".into());
    }
    Ok(())
}
