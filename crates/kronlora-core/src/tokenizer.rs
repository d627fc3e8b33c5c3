//! Text ↔ token ids, through Hugging Face's `tokenizers`: from a `tokenizer.json`, or rebuilt
//! from a GGUF file's metadata (byte-level BPE, as transformers does for GGUF).

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};
use crate::io::GgufFile;

pub struct TextTokenizer {
    inner: Tokenizer,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// Id used to pad batches (the pad token, else EOS, else 0).
    pub pad_token_id: u32,
}

fn tokenizer_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::InvalidModel(format!("{}: cannot build the tokenizer: {e}", path.display()))
}

impl TextTokenizer {
    /// A Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::InvalidModel(format!("{}: cannot read: {e}", path.display())))?;
        Self::from_bytes(&bytes, path)
    }

    /// A `tokenizer.json` given as bytes; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let mut inner = Tokenizer::from_bytes(bytes).map_err(|e| tokenizer_error(path, e))?;
        // Padding and truncation are kronlora's job (dynamic padding, `maxLength`), per batch.
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| tokenizer_error(path, e))?;
        let id = |t: &str| inner.token_to_id(t);
        let pad = id("[PAD]").or_else(|| id("<pad>")).or_else(|| id("<|endoftext|>")).unwrap_or(0);
        Ok(TextTokenizer { bos_token_id: None, eos_token_id: None, pad_token_id: pad, inner })
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
            let special: Vec<AddedToken> =
                types.iter().zip(&tokens).filter(|(t, _)| **t == 3).map(|(_, tok)| AddedToken::from(tok.clone(), true)).collect();
            inner.add_special_tokens(special).map_err(|e| tokenizer_error(path, e))?;
        }
        let opt = |key: &str| -> Result<Option<u32>> { if file.has(key) { Ok(Some(file.usize(key)? as u32)) } else { Ok(None) } };
        let eos = opt("tokenizer.ggml.eos_token_id")?;
        let pad = opt("tokenizer.ggml.padding_token_id")?.or(eos).unwrap_or(0);
        Ok(TextTokenizer { inner, bos_token_id: opt("tokenizer.ggml.bos_token_id")?, eos_token_id: eos, pad_token_id: pad })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`, with the tokenizer's special tokens (e.g. BERT's [CLS] … [SEP]).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(|e| Error::InvalidOption(format!("cannot tokenize the text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| Error::InvalidOption(format!("cannot decode token ids: {e}")))
    }
}
