//! Property-based fuzzing of every parser that reads untrusted bytes (issue 9): each target
//! starts from VALID files made by the tiny-model generators, mutates them with proptest
//! strategies (truncations, byte flips, header fields set to extremes, JSON values replaced,
//! dropped or duplicated) and feeds them to the public entry point.
//!
//! Every case must end in `Ok` or a coded error: never a panic, never a hang (each case runs on
//! its own thread with a deadline). The other properties (`Property`) are asserted too, except
//! where `KNOWN_OPEN` lists them as open in issue 9.
//!
//! `npm test` runs a small, seeded number of cases so that CI is fast and reproducible.
//! `scripts/fuzz.sh` runs the same targets for a bounded time with random seeds, through:
//! - `PROPTEST_CASES`: cases per target (default: the target's small default);
//! - `PROPTEST_RNG_SEED`: the base seed (default: fixed per target);
//! - `KRONLORA_FUZZ_SECONDS`: stop starting new cases after this long per target;
//! - `KRONLORA_FUZZ_ALL=1`: assert every property, `KNOWN_OPEN` ones included;
//! - `KRONLORA_FUZZ_ASSERT=NoInternal,Consistent`: assert exactly these (overrides the above),
//!   e.g. to look past one kind of finding for the others;
//! - `KRONLORA_FUZZ_VERBOSE=1`: print how each case ended.
//!
//! Failures are shrunk to a minimal input, printed with the seed that replays them, and
//! persisted by proptest under `proptest-regressions/` next to the target's source.

mod adapter;
mod chat_template;
mod checkpoint;
mod gguf;
mod memory_storage;
mod mutate;
mod options;
mod records;
mod safetensors;
mod tiny_files;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed, TestCaseError, TestError, TestRunner};

/// What a case must satisfy besides "no panic, no hang" (which are always asserted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Property {
    /// Bad input never ends up as `ERR_INTERNAL` (a candle failure, i.e. a kronlora bug).
    NoInternal,
    /// What an accepted input computes is finite (or the call says it is not, with a code).
    Finite,
    /// What an accepted input computes agrees with what it claims (e.g. a resumed run's step
    /// count with its total).
    Consistent,
    /// Inputs that ask for a lot of work (huge template loops) are generated at all: off,
    /// the strategy keeps them small, because without the limits issue 9 §2 asks for they run
    /// for minutes and take gigabytes, which the default test run cannot afford.
    HostileWork,
    /// Length and count fields may claim more than any machine can allocate. Off, they are
    /// capped at 2^31: today candle's GGUF reader allocates what a string length or a tensor
    /// rank claims before comparing it with the file, and when that allocation fails the
    /// process aborts (not a panic: the whole test binary dies, nothing can be shrunk).
    HugeAllocations,
}

/// Properties not asserted in the default run, because issue 9's fixes for them live on other
/// branches: (target, property, why). The lead deletes an entry once its fix is merged;
/// `KRONLORA_FUZZ_ALL=1` (what `scripts/fuzz.sh` sets by default) asserts them regardless.
const KNOWN_OPEN: &[(&str, Property, &str)] = &[];

/// The longest one case may run before it counts as a hang.
const CASE_LIMIT: Duration = Duration::from_secs(10);

/// Cases per proptest runner; time-bounded runs start a new runner (next seed) per batch.
const BATCH: u32 = 32;

/// A case's result: `Ok(problems)` when the input was accepted (each problem tagged with the
/// property it breaks), or the error the entry point refused it with.
pub type CaseResult = kronlora_core::Result<Vec<(Property, String)>>;

/// Whether `property` is asserted for `target` in this run.
pub fn asserted(target: &str, property: Property) -> bool {
    if let Ok(list) = std::env::var("KRONLORA_FUZZ_ASSERT") {
        return list.split(',').any(|p| p.trim() == format!("{property:?}"));
    }
    std::env::var("KRONLORA_FUZZ_ALL").is_ok_and(|v| v == "1")
        || !KNOWN_OPEN.iter().any(|(t, p, _)| *t == target && *p == property)
}

/// `problem` when any value is not finite.
pub fn finite(what: &str, values: &[f32]) -> Vec<(Property, String)> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => vec![(Property::Finite, format!("{what}[{i}] = {} (accepted, but not finite)", values[i]))],
        None => Vec::new(),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".into())
}

/// Run `case(input)` on its own thread; a panic or a run past `CASE_LIMIT` is an error. A hung
/// thread cannot be stopped and is left behind; the test fails anyway.
fn run_bounded<T: Send + 'static>(input: T, case: fn(&T) -> CaseResult) -> Result<CaseResult, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("fuzz-case".into())
        .stack_size(16 << 20)
        .spawn(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| case(&input)));
            let _ = tx.send(result.map_err(panic_message));
        })
        .map_err(|e| format!("cannot start a case thread: {e}"))?;
    match rx.recv_timeout(CASE_LIMIT) {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(message)) => Err(format!("panicked: {message}")),
        Err(_) => Err(format!("did not finish within {} s (a hang)", CASE_LIMIT.as_secs())),
    }
}

/// The verdict on one case: `Err` names what broke (and is a test failure).
fn judge(
    target: &str,
    outcome: Result<CaseResult, String>,
    tally: &RefCell<BTreeMap<&'static str, u64>>,
    known: &Cell<u64>,
    first_known: &Cell<Option<String>>,
) -> Result<(), String> {
    let outcome = outcome?;
    if std::env::var("KRONLORA_FUZZ_VERBOSE").is_ok_and(|v| v == "1") {
        eprintln!(
            "fuzz-case {target}: {}",
            outcome.as_ref().map_or_else(|e| e.to_js_message(), |p| format!("ok {p:?}"))
        );
    }
    *tally.borrow_mut().entry(outcome.as_ref().map_or_else(|e| e.code(), |_| "ok")).or_default() += 1;
    let problems = match outcome {
        Ok(problems) => problems,
        Err(e) if e.code() == "ERR_INTERNAL" => {
            vec![(Property::NoInternal, format!("refused with ERR_INTERNAL: {}", e.to_js_message()))]
        }
        Err(_) => Vec::new(),
    };
    for (property, what) in problems {
        if asserted(target, property) {
            return Err(format!("{property:?}: {what}"));
        }
        known.set(known.get() + 1);
        let first = first_known.take();
        first_known.set(first.or(Some(format!("{property:?}: {what}"))));
    }
    Ok(())
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// FNV-1a: a fixed default seed per target, so default runs differ between targets.
fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x1000_0000_01b3))
}

/// Fuzz `case` with inputs from `strategy` (see the module docs for the environment).
/// `source_file` is the target's `file!()`, where proptest keeps its regressions.
pub fn fuzz<S>(
    target: &'static str,
    source_file: &'static str,
    default_cases: u32,
    strategy: S,
    case: fn(&S::Value) -> CaseResult,
) where
    S: Strategy,
    S::Value: Clone + Debug + Send + 'static,
{
    let cases = env_u64("PROPTEST_CASES").map_or(default_cases as u64, |c| c.max(1));
    let base_seed = env_u64("PROPTEST_RNG_SEED").unwrap_or_else(|| name_seed(target));
    let time_limit = env_u64("KRONLORA_FUZZ_SECONDS").map(Duration::from_secs);
    let started = Instant::now();
    let (run, known, first_known) = (Cell::new(0u64), Cell::new(0u64), Cell::new(None::<String>));
    // How cases ended (`ok` or the error code): a target whose cases all end the same way
    // is not reaching the parser's depths.
    let tally = RefCell::new(BTreeMap::new());
    let mut failure = None;
    let mut batch = 0u64;
    while run.get() < cases && time_limit.is_none_or(|limit| started.elapsed() < limit) {
        let seed = base_seed.wrapping_add(batch);
        let size = (cases - run.get()).min(BATCH as u64) as u32;
        let config = Config {
            cases: size,
            rng_seed: RngSeed::Fixed(seed),
            source_file: Some(source_file),
            failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel("proptest-regressions"))),
            max_shrink_time: 120_000,
            max_shrink_iters: 2_000,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let result = runner.run(&strategy, |input| {
            run.set(run.get() + 1);
            judge(target, run_bounded(input, case), &tally, &known, &first_known).map_err(TestCaseError::fail)
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(why, input)) => {
                failure = Some(format!(
                    "{why}\nminimal input: {input:#?}\nreplay: PROPTEST_RNG_SEED={seed} PROPTEST_CASES={size} KRONLORA_FUZZ_ALL={} KRONLORA_FUZZ_ASSERT={} cargo test … --test integration -- --exact fuzz::{}::{target}",
                    std::env::var("KRONLORA_FUZZ_ALL").unwrap_or_default(),
                    std::env::var("KRONLORA_FUZZ_ASSERT").unwrap_or_default(),
                    std::path::Path::new(source_file).file_stem().map_or(String::new(), |s| s.to_string_lossy().into_owned())
                ));
                break;
            }
            Err(TestError::Abort(why)) => {
                failure = Some(format!("aborted: {why}"));
                break;
            }
        }
        batch += 1;
    }
    // One line per target for scripts/fuzz.sh to summarise.
    eprintln!(
        "fuzz-summary target={target} cases={} known_open_violations={} seed={base_seed} result={} ended={}",
        run.get(),
        known.get(),
        if failure.is_some() { "FAIL" } else { "pass" },
        tally.borrow().iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(",")
    );
    if let Some(example) = first_known.take() {
        eprintln!("fuzz-known target={target} first: {}", example.lines().next().unwrap_or(""));
    }
    if let Some(failure) = failure {
        panic!("fuzz target {target}: {failure}");
    }
}
