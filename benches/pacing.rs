//! The pacing benchmark: scenarios × strategies against the simulated OpenRouter provider.
//!
//! `cargo bench --bench pacing` runs every scenario of `pacing/harness.rs` with every
//! strategy, prints a Markdown table and writes it to `docs/pacing.md`, with the SVG timeline
//! of scenario (a) in `docs/pacing.svg`.
//!
//! The in-process strategies run against the simulator as a tower service under paused tokio
//! time: deterministic, and instant whatever the scenario's length. `reqwest-retry` runs over
//! real loopback HTTP against `Simulator::serve`, in real time, so its scenarios run in a
//! faster world (30 times: a minute lasts 2 s; twice for the 10-per-second scenario); its
//! times are reported scaled back to the scenario's clock (marked †), its ratios are
//! comparable as they are. Every scenario runs on a simulated network (`sim::Network`): the
//! simulator decides each request when it arrives, after a one-way delay with jitter.

#[path = "pacing/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{drive, Reply, Run, Scenario, Strategy};
use reqwest_middleware::ClientBuilder;
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::RetryTransientMiddleware;
use tokio::time::Instant;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks scenarios by letter.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let scenarios: Vec<Scenario> = Scenario::all()
        .into_iter()
        .filter(|s| {
            filter.is_empty()
                || filter
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(&format!("{:?}", s.id)))
        })
        .collect();
    let skip_loopback = std::env::var_os("PACING_SKIP_LOOPBACK").is_some();

    let started = std::time::Instant::now();
    let mut runs: Vec<Run> = Vec::new();
    for sc in &scenarios {
        for &strategy in sc.strategies() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            let run = rt.block_on(harness::run(sc, strategy));
            if let Err(e) = run.sim.check_invariants() {
                eprintln!(
                    "({:?}) {}: the simulator's limits broke: {e}",
                    sc.id,
                    strategy.name()
                );
            }
            eprintln!(
                "({:?}) {:<40} done in {:.1?}",
                sc.id,
                strategy.name(),
                started.elapsed()
            );
            runs.push(run);
        }
        if !skip_loopback && sc.workload.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let run = rt.block_on(loopback(sc));
            eprintln!(
                "({:?}) {:<40} done in {:.1?}",
                sc.id,
                Strategy::ReqwestRetry.name(),
                started.elapsed()
            );
            // Keep the table's order: the peers, then tower-quota last.
            let at = runs.len() - 1;
            runs.insert(at, run);
        }
    }

    let table = harness::markdown(&runs);
    let tokens = harness::markdown_tokens(&runs);
    let legend = harness::legend(&scenarios);
    println!("{table}\n{tokens}");
    let report = format!(
        "# Pacing benchmark\n\n\
         Reproduce with `cargo bench --bench pacing` (the runs take about {:.0} s on 2 cores, \
         after the build). tower-quota runs with its **defaults** — no margin, no tuning. Its \
         targets are asserted on the same runs, in virtual time, by `cargo test --test pacing`: \
         (a) zero 429s and makespan ≤ 1.02 × optimum; (b) no call after the cap is known, \
         every later request fails in under a millisecond with the reset time; (c) ≤ 1.10 ×, \
         at most twenty 429s in all and at most two sent after the first 429 reached the \
         client (the server says nothing on a 200, so the requests already on the wire \
         cannot be held back; on no network, at most two in all); (d) none sent early, and \
         every request succeeds (on the far network a burst on the wire meets each upstream \
         429; those refusals were foreseen and do not use up attempts; over 30 seeds at most \
         two of 3 000 requests fail); (e) every request \
         succeeds within the retry bounds; (f) at most two 429s, ≤ 1.05 ×; (g) as (c); (h) \
         and (i) at most two 429s, ≤ 1.10 ×; (j) and (k), with the built-in token cost, \
         zero 429s, and in (k) ≥ 90 % of the token quota.\n\n\
         {legend}\n\
         **The network.** The simulator decides each request when it *arrives*, after an \
         inbound one-way delay, and its answer reaches the client after an outbound one; each \
         leg is a base plus uniform jitter, drawn per request from the run's seed \
         (`sim::Network`). Unless a scenario says otherwise, the network is far: 150 ms each \
         way plus 0–200 ms of jitter on each leg (300 ms round trip at best, 700 ms at worst), \
         so two requests sent a window apart can arrive up to 200 ms less than a window apart. \
         The optimum counts the shortest legs: the first arrival after 150 ms, the last answer \
         back 150 ms after the shortest upstream latency.\n\n\
         Concurrency 16 in every scenario; upstream latency (the model's time, after the \
         decision) 0.2–0.8 s (none in (d)). \"wasted calls\" are the non-2xx answers the \
         server gave (\"early\": sent after the client had an upstream 429 and before its \
         delay had passed); makespan is from the first request to the last answer, the \
         optimum the least time the server allows; p50/p99 are request latencies, waits and \
         retries included. In (b) \"calls after cap known\" counts the calls sent after \
         the server's first \"daily cap\" answer reached the client, and \"fail fast\" is \
         the longest a request took to fail from then on (from when the calls already on \
         the wire had their answers). The servers of (h) and (i) count as LiteLLM does \
         and answer with its headers (`sim::Limit::fixed_clock`, `fixed_anchored`): (h) per \
         UTC clock minute, admitting 19 for `rpm: 20`, `retry-after` = the time to the next \
         minute, `x-ratelimit-{{limit,remaining}}-requests` on every 200; (i) in 60 s windows \
         opened by the first request, `retry-after: 60` whatever is left of the window, \
         `reset_at`, `x-ratelimit-api_key-{{limit,remaining}}-requests` on every 200.\n\n\
         The peers are configured as a user would: the scenario's limit (20 per minute, 10 \
         per second in (f), a loose 1000 per minute in (c) and (g), where the tier is \
         unknown), retries on 429 and 5xx, 5 attempts, backoff 0.5 s doubling to 8 s. \
         tower's `RateLimit` sits behind a `Buffer` so that all workers share it; governor's \
         `until_ready` loop runs on tokio's timer (a tokio clock for governor) so that it \
         works in virtual time. tower-quota runs `RetryAfterLayer` → \
         `RateLimitLayer::new(tier).key_by(KeyBy::Model)` → `QuotaClassifyLayer::default()`, \
         every setting left at its default: the preset tier \
         (`tiers::openrouter::free_with_credits()`, `free()` in (b)), `Quota::per_second(10)` \
         in (f), `Quota::per_minute(20)` in (h) and (i), an empty `Tier::new(\"unknown\")` in \
         (g); only (c) sets something, a loose 1000/min with `learn_limits(true)`.\n\n\
         † over real loopback HTTP, in real time, in a faster world (30×: 1 min = 2 s, \
         upstream delays 1–2 s; 2× in (f)), the network scaled down with it; times scaled \
         back. reqwest-retry backs off in real seconds (1 s, 2 s, 4 s), which the faster world \
         makes look 30× longer.\n\n\
         {table}\n\
         ![admissions over time, scenario (a)](pacing.svg)\n\n\
         ## Tokens (issue 15)\n\n\
         Scenario (j) limits tokens as well as requests: an OpenAI tier \
         (`sim::Tier::openai(500, 30_000)`) of 500 requests and 30 000 tokens per rolling \
         minute, the tokens **reserved on arrival as OpenAI counts them** — the prompt by the \
         server's own tokenizer (`⌈bytes / 4⌉` within ±15 %, seeded, plus 4 per message) plus \
         `max_tokens`, whatever the completion (`sim::Counting::Reserve`) — with OpenAI's \
         `x-ratelimit-*-{{requests,tokens}}` headers on every answer and its `tokens per min \
         (TPM)` 429 with `retry-after` and `retry-after-ms`. 300 requests, prompts of 200–3 000 \
         tokens (four bytes each), `max_tokens` 800, real completions uniform in 50–800, every \
         other request streamed (SSE, usage in the last chunk), 16 at a time, on the far network. \
         The optimum is the least time the server's charges allow: their sum over 30 000 \
         windows, the last admission opening the last one (a lower bound: it leaves no room \
         unused at a window's end). Token utilisation is the tokens the server counted (its \
         charges) ÷ 30 000 × ⌈makespan / 1 min⌉, the most the window allowed over the makespan.\n\n\
         Scenario (k) runs the same workload on a server that counts the **real usage**: \
         30 000 tokens and 500 requests per rolling minute, `usage.total_tokens` counted when \
         each answer is done and a request refused once the window's count has reached the \
         limit — as LiteLLM counts a key's `tpm` (`sim::Counting::AfterResponse`), but on a \
         rolling minute rather than LiteLLM's clock minute — with OpenAI's headers. Such a \
         server may let the count pass the limit (the requests in flight are not counted \
         yet), so utilisation can exceed 100 % and makespan ÷ optimum fall below 1; its \
         optimum is taken from the tokens the run's server counted (the completions' lengths \
         are drawn per admission).\n\n\
         The peers pace **requests** at the rate the token budget allows on average — \
         30 000 / (1 600 + 800) ≈ 12 per minute in (j), 30 000 / (1 600 + 425) ≈ 14 in (k), \
         what a user who knows the mean request would type (at 500/min they would only add \
         429s). tower-quota runs four times: its request quota only (`Quota::per_minute(500)`), \
         then with a token quota beside it \
         (`Quota::per_minute(30_000).with_dimension(Dimension::Tokens)`) and **no cost \
         function**: the built-in cost, read from each request's JSON body by the \
         `RetryAfterLayer` — the prompt's bytes / 3.5 plus 3 per message and 3 for the reply, \
         and `max_tokens` for the answer — with `Reconcile::Off` (the reservation stays), \
         `Reconcile::KeepMaxTokens` (what fits a server that counts `max_tokens`: (j)) and \
         `Reconcile::Usage` (what fits a server that counts the real usage: (k)); the harness \
         reads every response body to its end, when the classification layer hands the \
         usage to the limiter.\n\n\
         Issue 15's target, tower-quota with the built-in cost on (k): zero 429s and ≥ 90 % \
         of the token quota used (`tests/pacing.rs`, `k_tokens_real_usage_target`). A \
         refund wakes the waiter at the head of the key's queue, which would otherwise sleep \
         until the time computed when the window was full of reservations; without that, \
         `Usage` ran exactly as `Off`.\n\n\
         {tokens}",
        started.elapsed().as_secs_f64()
    );
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    if filter.is_empty() {
        std::fs::write(docs.join("pacing.md"), report).unwrap();
        let a: Vec<&Run> = runs
            .iter()
            .filter(|r| r.scenario.id == harness::Id::A)
            .collect();
        std::fs::write(docs.join("pacing.svg"), harness::svg(&a)).unwrap();
        eprintln!("wrote docs/pacing.md and docs/pacing.svg");
    }
    eprintln!("total {:.1?}", started.elapsed());
}

/// reqwest + reqwest-middleware + reqwest-retry with the defaults of reqwest-retry's README
/// (`ExponentialBackoff::builder().build_with_max_retries(3)`), over loopback HTTP.
async fn loopback(sc: &Scenario) -> Run {
    let factor = sc.loopback_factor;
    let scaled = sc.scaled(factor);
    let sim = scaled.simulator();
    let first_seq = scaled.prepare(&sim).await;
    let (addr, server) = sim.serve(([127, 0, 0, 1], 0)).await.unwrap();
    let client = ClientBuilder::new(
        reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(scaled.concurrency)
            .build()
            .unwrap(),
    )
    .with(RetryTransientMiddleware::new_with_policy(
        ExponentialBackoff::builder().build_with_max_retries(3),
    ))
    .build();
    let url = format!("http://{addr}/api/v1/chat/completions");
    let body = format!(
        r#"{{"model":"{}","messages":[{{"role":"user","content":"hi"}}]}}"#,
        harness::MODEL
    );
    let t0 = Instant::now();
    let done = drive(scaled.requests, scaled.concurrency, t0, move |_| {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        async move {
            let sent = client
                .post(url)
                .bearer_auth(harness::KEY)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let _ = resp.bytes().await;
                    Reply {
                        status: Some(status),
                        ..Reply::default()
                    }
                }
                Err(e) => Reply {
                    error: Some(e.to_string()),
                    ..Reply::default()
                },
            }
        }
    })
    .await;
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .ok();
    Run {
        scenario: scaled,
        strategy: Strategy::ReqwestRetry,
        sim,
        t0,
        first_seq,
        done,
        time_factor: factor,
    }
}
