//! A model's chat template (Jinja, from a GGUF's `tokenizer.chat_template` or a
//! `tokenizer_config.json`), rendered with limits: the template comes with a model file that
//! may be hostile, so a render may not run, print or recurse without bound. Limits hit are the
//! model's fault (`ERR_INVALID_MODEL`, naming where the template came from); a conversation the
//! template refuses through `raise_exception` is the data's (`ERR_INVALID_DATA`).

use std::cell::Cell;

use crate::error::{Error, Result};

/// Instructions one render may execute (minijinja's fuel). Real templates take a few dozen per
/// message, so this allows conversations of many thousands of messages while a loop nest such
/// as `range(10000)` twice is stopped after a fraction of a second.
pub const MAX_RENDER_INSTRUCTIONS: u64 = 2_000_000;
/// Bytes one render may write, counting text captured into variables and macro results too.
/// A record's text is at most `MAX_RECORD_BYTES` (1 MiB), so 16 MiB leaves room for any markup.
pub const MAX_RENDER_BYTES: usize = 16 << 20;
/// Nesting of macro calls and includes; transformers' templates do not recurse at all, and a
/// shallow limit keeps a recursive template from exhausting the (small) WebAssembly stack.
pub const MAX_RENDER_DEPTH: usize = 100;

/// The name the template is registered under in its environment.
const CHAT: &str = "chat";

thread_local! {
    /// Bytes formatted by `{{ … }}` in the render running on this thread (renders are
    /// synchronous, so one counter per thread is one per render).
    static FORMATTED: Cell<usize> = const { Cell::new(0) };
    /// Whether the running render stopped in `raise_exception` (the template refusing data).
    static RAISED: Cell<bool> = const { Cell::new(false) };
}

pub struct ChatTemplate {
    /// Where the template came from, for errors: `model.gguf: tokenizer.chat_template`.
    source: String,
    /// Compiled once; a template that does not compile keeps its error for the first chat
    /// record to report (models without chat data never need it).
    env: std::result::Result<minijinja::Environment<'static>, String>,
}

/// Bytes of a rendered value as `{{ }}` writes it (strings without a copy).
fn formatted_len(value: &minijinja::Value) -> usize {
    value.as_str().map_or_else(|| value.to_string().len(), str::len)
}

/// An `io::Write` into memory that refuses to grow past `limit` bytes.
struct BoundedOutput {
    bytes: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("the output limit is reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn environment(template: String) -> std::result::Result<minijinja::Environment<'static>, String> {
    let mut env = minijinja::Environment::new();
    // transformers' chat-template extras: Python string methods and `raise_exception`.
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
        RAISED.with(|r| r.set(true));
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    env.set_fuel(Some(MAX_RENDER_INSTRUCTIONS));
    env.set_recursion_limit(MAX_RENDER_DEPTH);
    env.set_formatter(|out, state, value| {
        let total = FORMATTED.with(|f| f.get()).saturating_add(formatted_len(value));
        FORMATTED.with(|f| f.set(total));
        if total > MAX_RENDER_BYTES {
            return Err(minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "the output limit is reached"));
        }
        minijinja::escape_formatter(out, state, value)
    });
    env.add_template_owned(CHAT, template).map_err(|e| e.to_string())?;
    Ok(env)
}

impl ChatTemplate {
    /// Compile `template`; `source` says where it came from.
    pub fn new(template: String, source: String) -> Self {
        ChatTemplate { env: environment(template), source }
    }

    /// Render `context`; `at` names the record in errors.
    pub fn render(&self, context: minijinja::Value, at: &str) -> Result<String> {
        let source = &self.source;
        let env = self
            .env
            .as_ref()
            .map_err(|e| Error::InvalidModel(format!("{at}: the chat template ({source}) does not compile: {e}")))?;
        let template = env
            .get_template(CHAT)
            .map_err(|e| Error::InvalidModel(format!("{at}: the chat template ({source}) is missing: {e}")))?;
        FORMATTED.with(|f| f.set(0));
        RAISED.with(|r| r.set(false));
        let mut out = BoundedOutput { bytes: Vec::new(), limit: MAX_RENDER_BYTES, exceeded: false };
        let rendered = template.render_captured_to(context, &mut out).map(drop);
        let raised = RAISED.with(|r| r.replace(false));
        let formatted = FORMATTED.with(|f| f.replace(0));
        match rendered {
            Ok(_) => String::from_utf8(out.bytes).map_err(|e| Error::InvalidModel(format!("{at}: the chat template ({source}) wrote invalid UTF-8: {e}"))),
            Err(_) if out.exceeded || formatted > MAX_RENDER_BYTES => Err(Error::InvalidModel(format!(
                "{at}: the chat template ({source}) writes more than {} MiB for one conversation (the limit per render); \
                 it is not a usable chat template: fix it in the model file or train on {{ \"prompt\", \"completion\" }} records",
                MAX_RENDER_BYTES >> 20
            ))),
            Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(Error::InvalidModel(format!(
                "{at}: the chat template ({source}) runs more than {MAX_RENDER_INSTRUCTIONS} instructions for one conversation (the limit per render); \
                 it is not a usable chat template: fix it in the model file or train on {{ \"prompt\", \"completion\" }} records"
            ))),
            Err(e) if raised => Err(Error::InvalidData(format!("{at}: the chat template ({source}) refuses this conversation: {}", e.detail().unwrap_or("no reason given")))),
            Err(e) if e.to_string().contains("recursion limit") => Err(Error::InvalidModel(format!(
                "{at}: the chat template ({source}) nests calls deeper than {MAX_RENDER_DEPTH} levels (the limit); it is not a usable chat template"
            ))),
            Err(e) => Err(Error::InvalidModel(format!("{at}: the chat template ({source}) failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template (as its GGUF and tokenizer_config.json hold it).
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn a_real_template_renders_as_transformers_does_with_the_limits_in_force() {
        // transformers' `apply_chat_template` output, recorded in the parity fixture.
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../../test/fixtures/smollm2.json")).unwrap();
        let chat = &fixture["chat"];
        let template = ChatTemplate::new(SMOLLM2.into(), "smollm2.gguf: tokenizer.chat_template".into());
        let messages: Vec<minijinja::Value> = chat["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let pairs = ["role", "content"].map(|k| (k, minijinja::Value::from(m[k].as_str().unwrap())));
                minijinja::Value::from(std::collections::BTreeMap::from(pairs))
            })
            .collect();
        let text = template
            .render(minijinja::context! { messages => messages.clone(), add_generation_prompt => false }, "x")
            .unwrap();
        assert_eq!(text, chat["text"].as_str().unwrap());
        let first = messages[..1].to_vec();
        let prompt =
            template.render(minijinja::context! { messages => first, add_generation_prompt => true }, "x").unwrap();
        assert_eq!(prompt, chat["prompt_text"].as_str().unwrap());
    }

    #[test]
    fn limits_are_per_render_and_named() {
        let looping = ChatTemplate::new(
            "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}".into(),
            "m.gguf: tokenizer.chat_template".into(),
        );
        for _ in 0..2 {
            let err = looping.render(minijinja::context! {}, "train.jsonl:3").unwrap_err();
            assert_eq!(err.code(), "ERR_INVALID_MODEL");
            assert!(err.to_string().starts_with("train.jsonl:3: the chat template (m.gguf: tokenizer.chat_template) runs more than 2000000 instructions"), "{err}");
        }
        // Output just under the limit renders; the counters start again at every render.
        let big = ChatTemplate::new("{% for i in range(150) %}{{ 'y' * 100000 }}{% endfor %}".into(), "t".into());
        for _ in 0..2 {
            assert_eq!(big.render(minijinja::context! {}, "x").unwrap().len(), 15_000_000);
        }
        let broken = ChatTemplate::new("{% for %}".into(), "tokenizer_config.json: chat_template".into());
        let err = broken.render(minijinja::context! {}, "x").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("x: the chat template (tokenizer_config.json: chat_template) does not compile:"),
            "{err}"
        );
    }
}
