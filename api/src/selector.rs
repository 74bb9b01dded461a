//! Label selectors: equality (`=`, `==`, `!=`) and set-based (`in`, `notin`, exists, `!key`)
//! requirements, as `matchLabels`/`matchExpressions` in objects and as the `-l` string syntax.

use crate::error::{Error, Result};
use crate::validate::{check_label_key, check_label_value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The selector as it appears in an object (`spec.selector`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One requirement over one label key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Operator,
    pub values: Vec<String>,
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => {
                !value.is_some_and(|v| self.values.contains(v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            Operator::Equals => write!(f, "{}={}", self.key, self.values[0]),
            Operator::NotEquals => write!(f, "{}!={}", self.key, self.values[0]),
            Operator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

/// A parsed selector: all requirements must hold. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl Selector {
    pub fn everything() -> Self {
        Selector::default()
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Parses the `-l` syntax: `app=web,tier!=db,env in (prod,qa),!canary,release`.
    pub fn parse(input: &str) -> Result<Self> {
        Parser::new(input).parse()
    }

    pub fn from_label_selector(sel: &LabelSelector) -> Result<Self> {
        let err = |message: String| Error::Selector {
            input: format!("{sel:?}"),
            message,
        };
        let mut requirements = Vec::new();
        for (k, v) in &sel.match_labels {
            check_label_key(k).map_err(|m| err(format!("matchLabels key {k:?}: {m}")))?;
            check_label_value(v).map_err(|m| err(format!("matchLabels[{k}] value {v:?}: {m}")))?;
            requirements.push(Requirement {
                key: k.clone(),
                op: Operator::Equals,
                values: vec![v.clone()],
            });
        }
        for e in &sel.match_expressions {
            check_label_key(&e.key).map_err(|m| err(format!("key {:?}: {m}", e.key)))?;
            let op = match e.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(err(format!(
                        "operator {other:?} must be one of In, NotIn, Exists, DoesNotExist"
                    )))
                }
            };
            let needs_values = matches!(op, Operator::In | Operator::NotIn);
            if needs_values == e.values.is_empty() {
                return Err(err(format!(
                    "operator {} {} values",
                    e.operator,
                    if needs_values { "needs" } else { "takes no" }
                )));
            }
            requirements.push(Requirement {
                key: e.key.clone(),
                op,
                values: e.values.clone(),
            });
        }
        Ok(Selector { requirements })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        Selector::from_label_selector(self).is_ok_and(|s| s.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

#[derive(Debug, PartialEq, Clone)]
enum Token {
    Ident(String),
    Comma,
    Open,
    Close,
    Eq,
    DoubleEq,
    NotEq,
    Bang,
}

struct Parser<'a> {
    input: &'a str,
    tokens: Vec<Token>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            input,
            tokens: Vec::new(),
            pos: 0,
        }
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::Selector {
            input: self.input.to_string(),
            message: message.into(),
        }
    }

    fn lex(&mut self) -> Result<()> {
        let mut chars = self.input.char_indices().peekable();
        while let Some((_, c)) = chars.next() {
            match c {
                c if c.is_whitespace() => {}
                ',' => self.tokens.push(Token::Comma),
                '(' => self.tokens.push(Token::Open),
                ')' => self.tokens.push(Token::Close),
                '=' => {
                    if chars.peek().map(|p| p.1) == Some('=') {
                        chars.next();
                        self.tokens.push(Token::DoubleEq);
                    } else {
                        self.tokens.push(Token::Eq);
                    }
                }
                '!' => {
                    if chars.peek().map(|p| p.1) == Some('=') {
                        chars.next();
                        self.tokens.push(Token::NotEq);
                    } else {
                        self.tokens.push(Token::Bang);
                    }
                }
                c if c.is_ascii_alphanumeric() || "-_./".contains(c) => {
                    let mut ident = String::from(c);
                    while let Some(&(_, n)) = chars.peek() {
                        if n.is_ascii_alphanumeric() || "-_./".contains(n) {
                            ident.push(n);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    self.tokens.push(Token::Ident(ident));
                }
                other => return Err(self.err(format!("unexpected character {other:?}"))),
            }
        }
        Ok(())
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn key(&mut self) -> Result<String> {
        match self.next() {
            Some(Token::Ident(k)) => {
                check_label_key(&k).map_err(|m| self.err(format!("key {k:?}: {m}")))?;
                Ok(k)
            }
            other => Err(self.err(format!("expected a label key, found {}", describe(other)))),
        }
    }

    fn value(&mut self) -> Result<String> {
        // An empty value is allowed (`key=`), as in Kubernetes.
        let v = match self.peek() {
            Some(Token::Ident(_)) => match self.next() {
                Some(Token::Ident(v)) => v,
                _ => unreachable!("peeked an identifier"),
            },
            _ => String::new(),
        };
        check_label_value(&v).map_err(|m| self.err(format!("value {v:?}: {m}")))?;
        Ok(v)
    }

    fn value_set(&mut self) -> Result<Vec<String>> {
        match self.next() {
            Some(Token::Open) => {}
            other => return Err(self.err(format!("expected '(', found {}", describe(other)))),
        }
        let mut values = Vec::new();
        loop {
            values.push(self.value()?);
            match self.next() {
                Some(Token::Comma) => continue,
                Some(Token::Close) => break,
                other => {
                    return Err(self.err(format!("expected ',' or ')', found {}", describe(other))))
                }
            }
        }
        Ok(values)
    }

    fn requirement(&mut self) -> Result<Requirement> {
        if self.peek() == Some(&Token::Bang) {
            self.next();
            let key = self.key()?;
            return Ok(Requirement {
                key,
                op: Operator::DoesNotExist,
                values: vec![],
            });
        }
        let key = self.key()?;
        let (op, values) = match self.peek().cloned() {
            None | Some(Token::Comma) => (Operator::Exists, vec![]),
            Some(Token::Eq) | Some(Token::DoubleEq) => {
                self.next();
                (Operator::Equals, vec![self.value()?])
            }
            Some(Token::NotEq) => {
                self.next();
                (Operator::NotEquals, vec![self.value()?])
            }
            Some(Token::Ident(word)) if word == "in" || word == "notin" => {
                self.next();
                let op = if word == "in" {
                    Operator::In
                } else {
                    Operator::NotIn
                };
                (op, self.value_set()?)
            }
            other => {
                return Err(self.err(format!(
                    "after key {key:?} expected =, ==, !=, in, notin or ',', found {}",
                    describe(other)
                )))
            }
        };
        Ok(Requirement { key, op, values })
    }

    fn parse(mut self) -> Result<Selector> {
        self.lex()?;
        let mut requirements = Vec::new();
        if self.tokens.is_empty() {
            return Ok(Selector { requirements });
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                None => break,
                Some(Token::Comma) => continue,
                other => return Err(self.err(format!("expected ',', found {}", describe(other)))),
            }
        }
        Ok(Selector { requirements })
    }
}

fn describe(t: Option<Token>) -> String {
    match t {
        None => "end of input".into(),
        Some(Token::Ident(s)) => format!("{s:?}"),
        Some(Token::Comma) => "','".into(),
        Some(Token::Open) => "'('".into(),
        Some(Token::Close) => "')'".into(),
        Some(Token::Eq) => "'='".into(),
        Some(Token::DoubleEq) => "'=='".into(),
        Some(Token::NotEq) => "'!='".into(),
        Some(Token::Bang) => "'!'".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matches_table() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("env", "prod")]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("env in (prod, qa)", true),
            ("env in (qa)", false),
            ("env notin (qa,dev)", true),
            ("missing notin (qa)", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("app = web , env in ( prod )", true),
            ("example.com/role=x", false),
        ];
        for (input, want) in cases {
            let sel = Selector::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(sel.matches(&l), want, "{input}");
        }
    }

    #[test]
    fn rejects_bad_syntax_with_a_reason() {
        for bad in [
            "=web",
            "app in prod",
            "app in (a,",
            "app web",
            "app=web,",
            "app=w eb",
            "app=@",
            "-bad=x",
            "a/b/c=d",
        ] {
            match Selector::parse(bad) {
                Err(Error::Selector { message, .. }) => assert!(!message.is_empty()),
                other => panic!("{bad:?}: expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn empty_value_is_allowed_as_in_kubernetes() {
        let sel = Selector::parse("app=").unwrap();
        assert_eq!(sel.requirements[0].values, vec![String::new()]);
        assert!(sel.matches(&labels(&[("app", "")])));
    }

    #[test]
    fn label_selector_and_string_agree() {
        let ls = LabelSelector {
            match_labels: [("app".to_string(), "web".to_string())].into(),
            match_expressions: vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "In".into(),
                values: vec!["prod".into(), "qa".into()],
            }],
        };
        let a = Selector::from_label_selector(&ls).unwrap();
        let b = Selector::parse(&a.to_string()).unwrap();
        assert_eq!(a, b);
        let bad = LabelSelector {
            match_expressions: vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "Exists".into(),
                values: vec!["x".into()],
            }],
            ..Default::default()
        };
        assert!(Selector::from_label_selector(&bad).is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,64}") {
            let _ = Selector::parse(&s);
        }

        #[test]
        fn printed_selectors_parse_back(
            reqs in proptest::collection::vec(
                ("[a-z][a-z0-9]{0,6}", 0usize..6, proptest::collection::vec("[a-z0-9]{1,5}", 1..3)),
                0..5)
        ) {
            let requirements: Vec<Requirement> = reqs.into_iter().map(|(key, op, values)| {
                let op = [Operator::Equals, Operator::NotEquals, Operator::In, Operator::NotIn,
                          Operator::Exists, Operator::DoesNotExist][op].clone();
                let values = match op {
                    Operator::Equals | Operator::NotEquals => vec![values[0].clone()],
                    Operator::In | Operator::NotIn => values,
                    _ => vec![],
                };
                Requirement { key, op, values }
            }).collect();
            let sel = Selector { requirements };
            prop_assert_eq!(Selector::parse(&sel.to_string()).unwrap(), sel);
        }
    }
}
