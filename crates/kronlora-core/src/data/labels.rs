//! Class labels: integers as given, or strings mapped to indices (sorted, so the mapping does
//! not depend on record order) and saved with the adapter.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Label {
    Index(usize),
    Name(String),
}

/// The label names of a classification task, in index order (empty for integer labels).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelMap {
    pub names: Vec<String>,
}

impl LabelMap {
    /// Build from training labels, each with where it came from (`train.jsonl:3`, for errors):
    /// all integers, or all strings (mixing is an error).
    pub fn from_labels<'a>(labels: impl Iterator<Item = (&'a Label, &'a str)>, num_labels: usize) -> Result<Self> {
        let mut names = BTreeMap::new();
        let (mut first_index, mut first_name) = (None, None);
        for (label, at) in labels {
            match label {
                Label::Name(n) => {
                    first_name.get_or_insert((at, n));
                    names.insert(n.clone(), ());
                }
                Label::Index(i) => {
                    first_index.get_or_insert((at, *i));
                    if *i >= num_labels {
                        return Err(Error::InvalidData(format!(
                            "{at}: label {i} is out of range for numLabels = {num_labels}; labels are 0..{}",
                            num_labels.saturating_sub(1)
                        )));
                    }
                }
            }
        }
        if let (Some((index_at, i)), Some((name_at, n))) = (first_index, first_name) {
            return Err(Error::InvalidData(format!(
                "labels mix integers and strings ({index_at}: {i}, {name_at}: \"{n}\"); use one kind"
            )));
        }
        let names: Vec<String> = names.into_keys().collect();
        if names.len() > num_labels {
            return Err(Error::InvalidData(format!(
                "{} distinct label names ({}) exceed numLabels = {num_labels}",
                names.len(),
                names.join(", ")
            )));
        }
        Ok(LabelMap { names })
    }

    /// The index of a label, or an error naming the labels that exist (e.g. at evaluation).
    pub fn index(&self, label: &Label, num_labels: usize) -> Result<usize> {
        match label {
            Label::Index(i) if *i < num_labels && self.names.is_empty() => Ok(*i),
            Label::Index(i) if self.names.is_empty() => Err(Error::InvalidData(format!(
                "label {i} is out of range for numLabels = {num_labels}; labels are 0..{}",
                num_labels.saturating_sub(1)
            ))),
            Label::Index(i) => Err(Error::InvalidData(format!(
                "label {i} is an integer, but this model was trained with string labels: {}; use one of them",
                self.names.join(", ")
            ))),
            Label::Name(n) => self.names.iter().position(|x| x == n).ok_or_else(|| {
                Error::InvalidData(format!(
                    "unknown label `{n}`; the model knows {}",
                    if self.names.is_empty() { "integer labels only".into() } else { self.names.join(", ") }
                ))
            }),
        }
    }
}

/// What a classification dataset holds: its size and how many classes its labels need
/// (distinct names, or the largest index + 1; at least 2). The CLI sizes the head from it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSummary {
    pub records: usize,
    pub labels: Vec<String>,
    pub num_labels: usize,
}

impl LabelSummary {
    pub fn of<'a>(labels: impl Iterator<Item = &'a Label>) -> Self {
        let (mut names, mut max, mut records) = (std::collections::BTreeSet::new(), 1usize, 0usize);
        for label in labels {
            records += 1;
            match label {
                Label::Name(n) => {
                    names.insert(n.clone());
                }
                Label::Index(i) => max = max.max(*i),
            }
        }
        let num_labels = if names.is_empty() { max + 1 } else { names.len() }.max(2);
        LabelSummary { records, labels: names.into_iter().collect(), num_labels }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_count_the_classes() {
        let names = [
            Label::Name("pos".into()),
            Label::Name("neg".into()),
            Label::Name("meh".into()),
            Label::Name("pos".into()),
        ];
        assert_eq!(
            LabelSummary::of(names.iter()),
            LabelSummary { records: 4, labels: vec!["meh".into(), "neg".into(), "pos".into()], num_labels: 3 }
        );
        assert_eq!(LabelSummary::of([Label::Index(0), Label::Index(4)].iter()).num_labels, 5);
        assert_eq!(LabelSummary::of([Label::Index(0)].iter()).num_labels, 2);
    }

    #[test]
    fn names_map_sorted_and_unknown_labels_are_errors() {
        let labels = [Label::Name("pos".into()), Label::Name("neg".into()), Label::Name("pos".into())];
        let map = LabelMap::from_labels(labels.iter().map(|l| (l, "t.jsonl:1")), 2).unwrap();
        assert_eq!(map.names, ["neg", "pos"]);
        assert_eq!(map.index(&Label::Name("pos".into()), 2).unwrap(), 1);
        let err = map.index(&Label::Name("meh".into()), 2).unwrap_err();
        assert!(err.to_string().contains("unknown label `meh`; the model knows neg, pos"));
        let mixed = [(Label::Index(0), "t.jsonl:1"), (Label::Name("a".into()), "t.jsonl:2")];
        let err = LabelMap::from_labels(mixed.iter().map(|(l, at)| (l, *at)), 2).unwrap_err();
        assert_eq!(err.to_string(), "labels mix integers and strings (t.jsonl:1: 0, t.jsonl:2: \"a\"); use one kind");
        let err =
            LabelMap::from_labels([(&Label::Index(0), "t.jsonl:1"), (&Label::Index(5), "t.jsonl:2")].into_iter(), 2)
                .unwrap_err();
        assert_eq!(err.to_string(), "t.jsonl:2: label 5 is out of range for numLabels = 2; labels are 0..1");
        let err = map.index(&Label::Index(1), 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "label 1 is an integer, but this model was trained with string labels: neg, pos; use one of them"
        );
    }
}
