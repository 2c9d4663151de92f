//! Memory per key at a million keys: the store's own estimate and the bytes a counting
//! allocator sees live (one test binary of its own: the allocator counts this thread).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use tower_quota::limit::store::MemoryStore;
use tower_quota::limit::{Key, Limiter, Mode};
use tower_quota::tiers;

struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

fn add(n: i64) {
    let _ = LIVE.try_with(|l| l.set(l.get() + n));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as i64);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as i64));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as i64);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as i64 - layout.size() as i64);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> i64 {
    LIVE.with(Cell::get)
}

const KEYS: u32 = 1_000_000;

#[tokio::test(start_paused = true)]
async fn a_million_idle_keys_take_at_most_150_bytes_each() {
    // A bound a tenth above the keys: the shards fill unevenly.
    // Reject mode on OpenRouter's free tier (20 per rolling minute, 50 per UTC day): each key
    // admitted once is held until midnight for its daily count, its minute long idle.
    let before = live();
    let store = Arc::new(MemoryStore::new().with_max_keys(KEYS as usize * 11 / 10));
    let limiter = Limiter::new(tiers::openrouter::free())
        .with_mode(Mode::Reject)
        .with_store(store.clone());
    let base = live();
    for i in 0..KEYS {
        limiter.try_acquire(Key::of(&i), 1).unwrap();
    }
    assert_eq!(store.len(), KEYS as usize);
    let active_estimate = store.bytes() / KEYS as usize;
    let active_live = (live() - base) / i64::from(KEYS);
    // Two minutes later every rolling log has expired (a sweep, which knows no quota, waits
    // twice the window); a sweep off the request path drops them (the hand does the same a
    // few keys at a time on each operation).
    tokio::time::sleep(Duration::from_secs(121)).await;
    store.evict_idle(limiter.now_ns());
    assert_eq!(store.len(), KEYS as usize, "held for their daily count");
    let idle_estimate = store.bytes() / KEYS as usize;
    let idle_live = (live() - before) / i64::from(KEYS);
    println!(
        "1 000 000 keys (OpenRouter free tier): {active_estimate} B a key just admitted by the \
         store's estimate, {active_live} B live; idle: {idle_estimate} B by the estimate, \
         {idle_live} B live (limiter included)"
    );
    assert!(
        idle_estimate <= 150,
        "{idle_estimate} B a key by the estimate"
    );
    assert!(idle_live <= 150, "{idle_live} B a key live");
    // A day later nothing is left.
    tokio::time::sleep(Duration::from_secs(86_400)).await;
    store.evict_idle(limiter.now_ns());
    assert_eq!(store.len(), 0);
    assert!(live() - before < 1 << 20, "{} B left", live() - before);
}
