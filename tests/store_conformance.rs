//! The store conformance suite against the in-memory store (the Redis store runs it in
//! `tests/redis.rs`).

use tower_quota::limit::store::{conformance, MemoryStore};

#[tokio::test]
async fn memory_store_conforms() {
    conformance::run(MemoryStore::new).await;
}
