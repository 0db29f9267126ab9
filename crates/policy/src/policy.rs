//! A policy: the rules that allow and the rules that deny, as stored and sent in JSON
//! (`{"allow": ["Bash(git diff:*)"], "deny": ["Read(.env)"]}`), within the limits.

use serde::{Deserialize, Serialize};

use crate::error::{Error, List, MAX_RULES};
use crate::rule::Rule;

/// A team's policy, or the rules a member adds for their own agents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Lists")]
pub struct Policy {
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
}

/// The JSON shape, before its rules are parsed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lists {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

impl TryFrom<Lists> for Policy {
    type Error = Error;

    fn try_from(lists: Lists) -> Result<Self, Error> {
        Self::parse(&lists.allow, &lists.deny)
    }
}

impl Policy {
    /// Parses both lists; the first refusal names its list and position.
    pub fn parse<S: AsRef<str>>(allow: &[S], deny: &[S]) -> Result<Self, Error> {
        let parse = |list: List, texts: &[S]| {
            check_count(list, texts.len())?;
            texts
                .iter()
                .enumerate()
                .map(|(at, text)| {
                    text.as_ref().parse().map_err(|error| Error::InList {
                        list,
                        number: at + 1,
                        source: Box::new(error),
                    })
                })
                .collect::<Result<Vec<Rule>, Error>>()
        };
        Ok(Self {
            allow: parse(List::Allow, allow)?,
            deny: parse(List::Deny, deny)?,
        })
    }

    /// Checks the number of rules in each list (a policy built in code may have too many; a
    /// parsed one never does, and no [`Rule`] is ever longer than `MAX_RULE_BYTES`).
    pub fn validate(&self) -> Result<(), Error> {
        check_count(List::Allow, self.allow.len())?;
        check_count(List::Deny, self.deny.len())
    }

    /// No rules at all.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

fn check_count(list: List, count: usize) -> Result<(), Error> {
    if count > MAX_RULES {
        return Err(Error::TooManyRules {
            list,
            count,
            limit: MAX_RULES,
        });
    }
    Ok(())
}
