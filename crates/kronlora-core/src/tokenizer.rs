//! Text ↔ token ids, through Hugging Face's `tokenizers`: from a `tokenizer.json`, or rebuilt
//! from a GGUF file's metadata (byte-level BPE, as transformers does for GGUF).

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::chat_template::ChatTemplate;
use crate::error::{Error, Result};
use crate::io::GgufFile;

pub struct TextTokenizer {
    inner: Tokenizer,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// Id used to pad batches (the pad token, else EOS, else 0).
    pub pad_token_id: u32,
    /// Whether `encode` starts a text with BOS (so causal-LM examples should too).
    pub add_bos: bool,
    /// The model's chat template, compiled once when the tokenizer is built.
    chat: Option<ChatTemplate>,
    /// The largest id a post-processor inserts (special tokens may lie outside the vocabulary).
    max_special_id: u32,
}

fn tokenizer_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::InvalidModel(format!("{}: cannot build the tokenizer: {e}", path.display()))
}

/// `tokenizers` reads a `TemplateProcessing` post-processor without checking it, then panics
/// when it encodes with a special token the template names but `special_tokens` lacks (or whose
/// `ids` and `tokens` differ in length). A panic aborts the WASM instance, so check first.
/// The ids it inserts are collected in `ids`.
fn check_template_processing(processor: &serde_json::Value, path: &Path, ids: &mut Vec<u32>) -> Result<()> {
    match processor["type"].as_str() {
        Some("Sequence") => {
            for p in processor["processors"].as_array().into_iter().flatten() {
                check_template_processing(p, path, ids)?;
            }
            Ok(())
        }
        Some("TemplateProcessing") => {
            let bad = |what: String| {
                Error::InvalidModel(format!("{}: post_processor (TemplateProcessing) {what}", path.display()))
            };
            let tokens = &processor["special_tokens"];
            for piece in ["single", "pair"].iter().filter_map(|k| processor[*k].as_array()).flatten() {
                let Some(id) = piece.get("SpecialToken").map(|t| &t["id"]) else { continue };
                let Some(id) = id.as_str() else {
                    return Err(bad(format!("names a special token by {id}, not by a string")));
                };
                let token = tokens.get(id).ok_or_else(|| {
                    bad(format!("uses the special token {id:?}, which its `special_tokens` does not define"))
                })?;
                let numbers: Option<Vec<u32>> = token["ids"]
                    .as_array()
                    .and_then(|list| list.iter().map(|v| v.as_u64().and_then(|x| u32::try_from(x).ok())).collect());
                match numbers {
                    Some(numbers)
                        if !numbers.is_empty() && Some(numbers.len()) == token["tokens"].as_array().map(Vec::len) =>
                    {
                        ids.extend(numbers)
                    }
                    _ => {
                        return Err(bad(format!(
                            "special token {id:?} needs `ids` (token ids) and `tokens` of the same non-zero length"
                        )))
                    }
                }
            }
            Ok(())
        }
        // `"cls": ["[CLS]", 101]`, `"sep": ["[SEP]", 102]`: ids inserted as they are.
        Some("BertProcessing" | "RobertaProcessing") => {
            for key in ["cls", "sep"] {
                let id = processor[key][1].as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(|| {
                    Error::InvalidModel(format!(
                        "{}: post_processor `{key}` must be [token, id] with a token id, got {}",
                        path.display(),
                        processor[key]
                    ))
                })?;
                ids.push(id);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

impl TextTokenizer {
    /// A Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).map_err(|e| Error::InvalidModel(format!("{}: cannot read: {e}", path.display())))?;
        Self::from_bytes(&bytes, path)
    }

    /// A `tokenizer.json` given as bytes; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let json: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| tokenizer_error(path, e))?;
        let mut special_ids = Vec::new();
        check_template_processing(&json["post_processor"], path, &mut special_ids)?;
        let mut inner = Tokenizer::from_bytes(bytes).map_err(|e| tokenizer_error(path, e))?;
        // Padding and truncation are kronlora's job (dynamic padding, `maxLength`), per batch.
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| tokenizer_error(path, e))?;
        let id = |t: &str| inner.token_to_id(t);
        let pad = id("[PAD]").or_else(|| id("<pad>")).or_else(|| id("<|endoftext|>")).unwrap_or(0);
        let max_special_id = special_ids.into_iter().max().unwrap_or(0);
        Ok(TextTokenizer {
            bos_token_id: None,
            eos_token_id: None,
            pad_token_id: pad,
            inner,
            add_bos: false,
            chat: None,
            max_special_id,
        }
        .finish())
    }

    /// The byte-level BPE described by `tokenizer.ggml.{model,tokens,merges,token_type}`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let path = file.path();
        let model = file.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::InvalidModel(format!(
                "{}: tokenizer.ggml.model `{model}` is not supported (only byte-level BPE, \"gpt2\")",
                path.display()
            )));
        }
        let tokens = file.strings("tokenizer.ggml.tokens")?;
        let merges = file
            .strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| Error::InvalidModel(format!("{}: merge `{m}` is not two tokens", path.display())))
            })
            .collect::<Result<Vec<_>>>()?;
        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| tokenizer_error(path, e))?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevelDecoder::new(true, true, true)));
        // Control tokens (type 3) are matched whole in text, like `<|im_start|>`.
        if file.has("tokenizer.ggml.token_type") {
            let types = file.i64s("tokenizer.ggml.token_type")?;
            let special: Vec<AddedToken> = types
                .iter()
                .zip(&tokens)
                .filter(|(t, _)| **t == 3)
                .map(|(_, tok)| AddedToken::from(tok.clone(), true))
                .collect();
            inner.add_special_tokens(special).map_err(|e| tokenizer_error(path, e))?;
        }
        let opt = |key: &str| -> Result<Option<u32>> {
            if !file.has(key) {
                return Ok(None);
            }
            let id = file.usize(key)?;
            u32::try_from(id)
                .map(Some)
                .map_err(|_| Error::InvalidModel(format!("{}: `{key}` = {id} is not a token id", path.display())))
        };
        let eos = opt("tokenizer.ggml.eos_token_id")?;
        let pad = opt("tokenizer.ggml.padding_token_id")?.or(eos).unwrap_or(0);
        let chat = if file.has("tokenizer.chat_template") {
            Some(ChatTemplate::new(
                file.string("tokenizer.chat_template")?,
                format!("{}: tokenizer.chat_template", path.display()),
            ))
        } else {
            None
        };
        let bos = opt("tokenizer.ggml.bos_token_id")?;
        // llama.cpp's flag; without it, byte-level BPE models (GPT-2 style) add no BOS.
        let add_bos = if file.has("tokenizer.ggml.add_bos_token") {
            file.bool("tokenizer.ggml.add_bos_token")? && bos.is_some()
        } else {
            false
        };
        Ok(TextTokenizer {
            inner,
            bos_token_id: bos,
            eos_token_id: eos,
            pad_token_id: pad,
            add_bos,
            chat,
            max_special_id: 0,
        })
    }

    /// Fill in BOS/EOS and the chat template from a decoder's `config.json` and
    /// `tokenizer_config.json` (a `tokenizer.json` alone does not say which ids they are).
    pub fn with_decoder_config(mut self, config: &[u8], tokenizer_config: Option<&[u8]>) -> Self {
        let config: serde_json::Value = serde_json::from_slice(config).unwrap_or_default();
        let id = |v: &serde_json::Value| {
            v.as_u64().or_else(|| v.as_array().and_then(|a| a.first()).and_then(|x| x.as_u64())).map(|x| x as u32)
        };
        self.bos_token_id = id(&config["bos_token_id"]);
        self.eos_token_id = id(&config["eos_token_id"]);
        if let Some(tc) = tokenizer_config.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok()) {
            let template = match &tc["chat_template"] {
                serde_json::Value::String(s) => Some(s.clone()),
                // A list of named templates: the default one.
                serde_json::Value::Array(list) => list
                    .iter()
                    .find(|t| t["name"] == "default")
                    .and_then(|t| t["template"].as_str())
                    .map(str::to_string),
                _ => None,
            };
            self.chat = template.map(|t| ChatTemplate::new(t, "tokenizer_config.json: chat_template".into()));
            if let Some(eos) = tc["eos_token"].as_str().and_then(|t| self.inner.token_to_id(t)) {
                self.eos_token_id = self.eos_token_id.or(Some(eos));
            }
        }
        if self.pad_token_id == 0 {
            if let Some(eos) = self.eos_token_id {
                self.pad_token_id = eos;
            }
        }
        self.finish()
    }

    /// Decide `add_bos` from what `encode` does (its post-processor adds BOS or not).
    fn finish(mut self) -> Self {
        self.add_bos = match (self.bos_token_id, self.inner.encode("a", true)) {
            (Some(bos), Ok(enc)) => enc.get_ids().first() == Some(&bos),
            _ => false,
        };
        self
    }

    /// Token ids of `text` without special tokens (pieces of a longer sequence).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::InvalidOption(format!("cannot tokenize the text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    fn token_text(&self, id: Option<u32>) -> String {
        id.and_then(|i| self.inner.id_to_token(i)).unwrap_or_default()
    }

    /// Render `messages` `(role, content)` with the model's chat template, as transformers'
    /// `apply_chat_template(..., tokenize=False)`; `at` names the record in errors.
    pub fn render_chat(&self, messages: &[(String, String)], add_generation_prompt: bool, at: &str) -> Result<String> {
        let Some(chat) = &self.chat else {
            return Err(Error::InvalidData(format!(
                "{at}: chat records need a model with a chat template, and this one has none; use {{ \"prompt\", \"completion\" }} records"
            )));
        };
        let messages: Vec<minijinja::Value> = messages
            .iter()
            .map(|(r, c)| {
                let m: std::collections::BTreeMap<&str, minijinja::Value> =
                    [("role", minijinja::Value::from(r.as_str())), ("content", minijinja::Value::from(c.as_str()))]
                        .into();
                minijinja::Value::from(m)
            })
            .collect();
        chat.render(
            minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.token_text(self.bos_token_id),
                eos_token => self.token_text(self.eos_token_id),
            },
            at,
        )
    }

    /// The largest token id this tokenizer can produce (vocabulary, added tokens, the ids its
    /// post-processor and padding insert): the model needs an embedding row for each.
    pub fn largest_token_id(&self) -> u32 {
        let vocab = self.inner.get_vocab(true).into_values().max().unwrap_or(0);
        [vocab, self.max_special_id, self.pad_token_id, self.bos_token_id.unwrap_or(0), self.eos_token_id.unwrap_or(0)]
            .into_iter()
            .max()
            .unwrap_or(0)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`, with the tokenizer's special tokens (e.g. BERT's [CLS] … [SEP]).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::InvalidOption(format!("cannot tokenize the text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| Error::InvalidOption(format!("cannot decode token ids: {e}")))
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn post_processors_report_the_ids_they_insert_and_refuse_what_tokenizers_would_panic_on() {
        let path = Path::new("tokenizer.json");
        let mut ids = Vec::new();
        let bert = serde_json::json!({ "type": "BertProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101] });
        check_template_processing(&bert, path, &mut ids).unwrap();
        assert_eq!(ids, [101, 102]);
        let huge = serde_json::json!({ "type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 1u64 << 40] });
        let e = check_template_processing(&huge, path, &mut ids).unwrap_err().to_js_message();
        assert!(e.starts_with("[ERR_INVALID_MODEL] tokenizer.json: post_processor `cls`"), "{e}");
        let undefined = serde_json::json!({ "type": "Sequence", "processors": [{ "type": "TemplateProcessing",
            "single": [{ "SpecialToken": { "id": "[CLS]", "type_id": 0 } }], "pair": [], "special_tokens": {} }] });
        let e = check_template_processing(&undefined, path, &mut ids).unwrap_err().to_js_message();
        assert!(e.contains("uses the special token \"[CLS]\", which its `special_tokens` does not define"), "{e}");
    }
}
