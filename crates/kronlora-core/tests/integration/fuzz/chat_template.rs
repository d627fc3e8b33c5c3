//! Chat templates generated from a small Jinja grammar (loops over messages and ranges, string
//! repetition, indexing, filters, Python-style methods, recursion, `raise_exception`, syntax
//! errors), rendered by the tokenizer for generated conversations.
//!
//! Loop bounds and repetition counts stay small unless `Property::HostileWork` is asserted:
//! with huge ones a render runs for minutes and takes gigabytes until issue 9 §2's limits are in.

use std::path::Path;

use kronlora_core::tokenizer::TextTokenizer;
use proptest::prelude::*;
use serde_json::json;

use super::{asserted, fuzz, CaseResult, Property};
use crate::tiny::word_tokenizer;

fn counts(hostile: bool) -> BoxedStrategy<u64> {
    if hostile {
        prop_oneof![2 => 0u64..20, 1 => proptest::sample::select(vec![1_000u64, 10_000, 100_000, 1_000_000, 1 << 31, 1 << 40])].boxed()
    } else {
        (0u64..20).boxed()
    }
}

fn leaf(hostile: bool) -> impl Strategy<Value = String> {
    let fixed = proptest::sample::select(vec![
        "<x>",
        "\n",
        "{{ m.role }}",
        "{{ m.content }}",
        "{{ bos_token }}",
        "{{ eos_token }}",
        "{{ loop.index }}",
        "{{ m.content|upper }}",
        "{{ m.content.strip() }}",
        "{{ m.content[1:] }}",
        "{{ m['role'] }}",
        "{{ nothing.at.all }}",
        "{{ messages|tojson }}",
        "{{ messages|length }}",
        "{{ raise_exception('refused') }}",
        "{{ m.content.split(' ')|join('-') }}",
        "{{ 1 / 0 }}",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(1) }}",
        "{% set ns = namespace(k=0) %}{{ ns.k }}",
        "{{ m.content is string }}",
        "{% for %}",
        "{{",
        "{% endfor %}",
        "{% if %}",
        "}}",
        "{# unclosed",
        "{{ messages[0]['content'] * 'x' }}",
        "{{ range(3)|list }}",
    ]);
    prop_oneof![
        6 => fixed.prop_map(|s| s.to_string()),
        1 => counts(hostile).prop_map(|n| format!("{{{{ 'y' * {n} }}}}")),
        1 => prop_oneof![Just(0i64), Just(1), Just(-1), Just(100), Just(1 << 31), Just(i64::MIN)].prop_map(|i| format!("{{{{ messages[{i}].content }}}}")),
    ]
}

fn template(hostile: bool) -> impl Strategy<Value = String> {
    let counts = counts(hostile);
    proptest::collection::vec(leaf(hostile), 1..4).prop_map(|parts| parts.concat()).prop_recursive(3, 16, 3, move |inner| {
        prop_oneof![
            2 => inner.clone().prop_map(|body| format!("{{% for m in messages %}}{body}{{% endfor %}}")),
            1 => (counts.clone(), inner.clone()).prop_map(|(n, body)| format!("{{% for i in range({n}) %}}{body}{{% endfor %}}")),
            1 => inner.clone().prop_map(|body| format!("{{% if add_generation_prompt %}}{body}{{% else %}}<no>{{% endif %}}")),
            1 => proptest::collection::vec(inner, 2..4).prop_map(|parts| parts.concat()),
        ]
    })
}

#[derive(Debug, Clone)]
pub struct TemplateCase {
    template: String,
    messages: Vec<(String, String)>,
    add_generation_prompt: bool,
}

fn template_case(case: &TemplateCase) -> CaseResult {
    let tokenizer_config = json!({ "chat_template": case.template, "eos_token": "[SEP]" }).to_string();
    let tokenizer = TextTokenizer::from_bytes(&word_tokenizer(50), Path::new("tokenizer.json"))?
        .with_decoder_config(br#"{"bos_token_id":1,"eos_token_id":3}"#, Some(tokenizer_config.as_bytes()));
    tokenizer.render_chat(&case.messages, case.add_generation_prompt, "chat.jsonl:1")?;
    Ok(Vec::new())
}

#[test]
fn chat_template() {
    let hostile = asserted("chat_template", Property::HostileWork);
    let message = (proptest::sample::select(vec!["user", "assistant", "system", ""]), "[a-z ]{0,12}")
        .prop_map(|(r, c)| (r.to_string(), c));
    let strategy = (template(hostile), proptest::collection::vec(message, 0..4), any::<bool>()).prop_map(
        |(template, messages, add_generation_prompt)| TemplateCase { template, messages, add_generation_prompt },
    );
    fuzz("chat_template", file!(), 256, strategy, template_case);
}
