//! `NativeTraining`: a training run on its own thread. JavaScript pulls events with `next()`
//! (a Promise per event, resolved on libuv's pool, so the JS thread never waits), asks for the
//! outcome with `finish()`, and stops it with `cancel()` (honoured after the current step).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use kronlora_core::api::{self, FsStorage, PretrainedModel, TrainEvent, TrainObserver};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::task::{panic_error, CoreTask};

/// A panic's text as a core error (reported as ERR_INTERNAL, "please report this bug").
fn candle_core_msg(text: String) -> api::CandleError {
    api::CandleError::Msg(text.trim_start_matches("[ERR_INTERNAL] ").to_string())
}

struct ChannelObserver {
    events: Sender<String>,
    cancel: Arc<AtomicBool>,
}

impl TrainObserver for ChannelObserver {
    fn event(&mut self, event: &TrainEvent) {
        // A closed receiver only means nobody listens any more; training goes on.
        let _ = self.events.send(api::event_json(event));
    }
    fn should_stop(&mut self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

type Outcome = api::Result<String>;

#[napi]
pub struct NativeTraining {
    events: Arc<Mutex<Receiver<String>>>,
    cancel: Arc<AtomicBool>,
    thread: Arc<Mutex<Option<JoinHandle<Outcome>>>>,
}

impl NativeTraining {
    /// Start training `model` on a new thread; it holds the model's write lock until done.
    pub fn start(model: Arc<RwLock<PretrainedModel>>, options_json: String) -> Self {
        let (tx, rx) = channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let observer_cancel = cancel.clone();
        let (locked_tx, locked_rx) = channel::<()>();
        let thread = std::thread::spawn(move || -> Outcome {
            catch_unwind(AssertUnwindSafe(|| {
                let guard = model.write();
                let _ = locked_tx.send(());
                let mut guard = guard
                    .map_err(|_| api::Error::InvalidState("the model is unusable after an earlier failure".into()))?;
                let mut observer = ChannelObserver { events: tx, cancel: observer_cancel };
                api::train_json(&mut guard, &options_json, &FsStorage, &mut observer)
            }))
            .unwrap_or_else(|payload| Err(api::Error::Internal(candle_core_msg(panic_error(payload).reason))))
        });
        // Return once the thread holds the model: a call made right after `train()` then sees
        // it busy instead of racing the thread for the lock.
        let _ = locked_rx.recv();
        NativeTraining { events: Arc::new(Mutex::new(rx)), cancel, thread: Arc::new(Mutex::new(Some(thread))) }
    }
}

#[napi]
impl NativeTraining {
    /// The next event as JSON, or null once the run has ended and every event was read.
    #[napi(ts_return_type = "Promise<string | null>")]
    pub fn next(&self) -> AsyncTask<CoreTask<Option<String>>> {
        let events = self.events.clone();
        CoreTask::new(move || {
            let rx = events.lock().map_err(|_| api::Error::InvalidState("the event stream failed".into()))?;
            Ok(rx.recv().ok())
        })
    }

    /// Wait for the run to end: the result as JSON, or the error that stopped it.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn finish(&self) -> AsyncTask<CoreTask<String>> {
        let thread = self.thread.clone();
        CoreTask::new(move || {
            let handle = thread
                .lock()
                .ok()
                .and_then(|mut t| t.take())
                .ok_or_else(|| api::Error::InvalidState("finish() was already called for this run".into()))?;
            handle
                .join()
                .unwrap_or_else(|_| Err(api::Error::Internal(candle_core_msg("the training thread panicked".into()))))
        })
    }

    /// Ask the run to stop after the current optimiser step (a checkpoint is written when
    /// the run has an output directory).
    #[napi]
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}
