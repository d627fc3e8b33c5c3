//! Causal-LM and multiple-choice examples: token ids with a per-token loss mask, so that the
//! loss covers only what the model should learn to write (the completion, the assistant's
//! turns, the answer), and right-padded batches of them.

use candle_core::{Device, Tensor};

use super::jsonl::Record;
use crate::error::{Error, Result};
use crate::tokenizer::TextTokenizer;

/// One tokenised sequence; `loss[i]` says whether token `i` is predicted (and scored).
#[derive(Debug, Clone, PartialEq)]
pub struct LmExample {
    pub ids: Vec<u32>,
    pub loss: Vec<bool>,
}

impl LmExample {
    fn push(&mut self, ids: &[u32], loss: bool) {
        self.ids.extend_from_slice(ids);
        self.loss.extend(std::iter::repeat_n(loss, ids.len()));
    }

    fn scored(&self) -> usize {
        // Token 0 is never predicted: nothing comes before it.
        self.loss.iter().skip(1).filter(|l| **l).count()
    }
}

/// A multiple-choice question: one sequence per choice (the question, then the choice scored).
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceExample {
    pub choices: Vec<LmExample>,
    pub answer: usize,
}

/// A padded batch: `ids [b, t]` u32; `targets [b, t-1]` u32 (the next token); `weights [b, t-1]`
/// f32, 1 where that next token is scored.
pub struct LmBatch {
    pub ids: Tensor,
    pub targets: Tensor,
    pub weights: Tensor,
    pub tokens: usize,
    pub scored: usize,
}

fn encode_piece(tokenizer: &TextTokenizer, text: &str) -> Result<Vec<u32>> {
    tokenizer.encode_plain(text)
}

/// Tokenise one causal-LM record. Plain text is scored everywhere; prompt/completion on the
/// completion; chat on the assistant turns (rendered with the model's chat template). An end
/// token follows what is scored, so the model learns to stop.
pub fn encode_lm_record(tokenizer: &TextTokenizer, record: &Record, max_length: usize, at: &str) -> Result<LmExample> {
    let mut ex = LmExample { ids: Vec::new(), loss: Vec::new() };
    if let Some(bos) = tokenizer.bos_token_id.filter(|_| tokenizer.add_bos) {
        ex.push(&[bos], false);
    }
    let eos: Vec<u32> = tokenizer.eos_token_id.into_iter().collect();
    match record {
        Record::Text { text } => {
            ex.push(&encode_piece(tokenizer, text)?, true);
            ex.push(&eos, true);
        }
        Record::PromptCompletion { prompt, completion } => {
            ex.push(&encode_piece(tokenizer, prompt)?, false);
            ex.push(&encode_piece(tokenizer, completion)?, true);
            ex.push(&eos, true);
        }
        Record::Chat { messages } => {
            // Render the conversation up to each assistant turn and score the text that turn
            // adds; everything else (system, user, template markup) is context.
            ex = LmExample { ids: Vec::new(), loss: Vec::new() };
            let mut done = String::new();
            for (i, (role, _)) in messages.iter().enumerate() {
                let is_assistant = role == "assistant";
                let upto = tokenizer.render_chat(&messages[..=i], false, at)?;
                if is_assistant {
                    let prefix = tokenizer.render_chat(&messages[..i], true, at)?;
                    let Some(context) = prefix.strip_prefix(done.as_str()) else {
                        return Err(Error::InvalidData(format!(
                            "{at}: the chat template does not render conversations incrementally"
                        )));
                    };
                    let Some(answer) = upto.strip_prefix(prefix.as_str()) else {
                        return Err(Error::InvalidData(format!(
                            "{at}: the chat template does not render conversations incrementally"
                        )));
                    };
                    ex.push(&encode_piece(tokenizer, context)?, false);
                    ex.push(&encode_piece(tokenizer, answer)?, true);
                } else {
                    let Some(context) = upto.strip_prefix(done.as_str()) else {
                        return Err(Error::InvalidData(format!(
                            "{at}: the chat template does not render conversations incrementally"
                        )));
                    };
                    ex.push(&encode_piece(tokenizer, context)?, false);
                }
                done = upto;
            }
        }
        Record::Classification { .. } | Record::MultipleChoice { .. } => {
            return Err(Error::InvalidData(format!("{at}: not a causal-LM record")));
        }
    }
    ex.ids.truncate(max_length);
    ex.loss.truncate(max_length);
    if ex.ids.is_empty() {
        return Err(Error::InvalidData(format!("{at}: the text tokenizes to nothing")));
    }
    if ex.scored() == 0 {
        return Err(Error::InvalidData(format!(
            "{at}: no token is left to learn from after truncation to maxLength = {max_length}; shorten the prompt or raise maxLength"
        )));
    }
    Ok(ex)
}

/// Tokenise a multiple-choice record: for each choice, `question` + " " + choice with the choice scored.
pub fn encode_choice_record(
    tokenizer: &TextTokenizer,
    record: &Record,
    max_length: usize,
    at: &str,
) -> Result<ChoiceExample> {
    let Record::MultipleChoice { question, choices, answer } = record else {
        return Err(Error::InvalidData(format!("{at}: not a multiple-choice record")));
    };
    let choices = choices
        .iter()
        .map(|c| {
            let r = Record::PromptCompletion { prompt: question.clone(), completion: format!(" {c}") };
            let mut ex = encode_lm_record(tokenizer, &r, usize::MAX, at)?;
            // Drop the end token: a choice is scored by its own words only.
            if tokenizer.eos_token_id.is_some() {
                ex.ids.pop();
                ex.loss.pop();
            }
            // Keep the end (the choice) when too long: cut the question from the left.
            if ex.ids.len() > max_length {
                let cut = ex.ids.len() - max_length;
                ex.ids.drain(..cut);
                ex.loss.drain(..cut);
            }
            if ex.scored() == 0 {
                return Err(Error::InvalidData(format!("{at}: a choice tokenizes to nothing")));
            }
            Ok(ex)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ChoiceExample { choices, answer: *answer })
}

/// Right-pad `examples` to the longest (padding is never scored, and a causal model never
/// attends forward, so no attention mask is needed).
pub fn lm_batch(examples: &[&LmExample], pad: u32, device: &Device) -> Result<LmBatch> {
    let t = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1).max(2);
    let b = examples.len();
    let (mut ids, mut targets, mut weights) =
        (Vec::with_capacity(b * t), Vec::with_capacity(b * (t - 1)), Vec::with_capacity(b * (t - 1)));
    let (mut tokens, mut scored) = (0, 0);
    for e in examples {
        tokens += e.ids.len();
        scored += e.scored();
        ids.extend(e.ids.iter().copied().chain(std::iter::repeat(pad)).take(t));
        for j in 1..t {
            targets.push(e.ids.get(j).copied().unwrap_or(pad));
            weights.push(if e.loss.get(j).copied().unwrap_or(false) { 1f32 } else { 0.0 });
        }
    }
    Ok(LmBatch {
        ids: Tensor::from_vec(ids, (b, t), device)?,
        targets: Tensor::from_vec(targets, (b, t - 1), device)?,
        weights: Tensor::from_vec(weights, (b, t - 1), device)?,
        tokens,
        scored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_shift_targets_and_mask_padding() {
        let a = LmExample { ids: vec![1, 2, 3], loss: vec![false, true, true] };
        let b = LmExample { ids: vec![4, 5], loss: vec![false, true] };
        let batch = lm_batch(&[&a, &b], 0, &Device::Cpu).unwrap();
        assert_eq!(batch.ids.to_vec2::<u32>().unwrap(), vec![vec![1, 2, 3], vec![4, 5, 0]]);
        assert_eq!(batch.targets.to_vec2::<u32>().unwrap(), vec![vec![2, 3], vec![5, 0]]);
        assert_eq!(batch.weights.to_vec2::<f32>().unwrap(), vec![vec![1., 1.], vec![1., 0.]]);
        assert_eq!((batch.tokens, batch.scored), (5, 3));
    }
}
