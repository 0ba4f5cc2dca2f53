//! Org: one deployment serving the accounts of an AWS Organization, in pure terms.
//!
//! A failed `RunTask` recorded in another account reaches the central bus through that
//! account's forwarding rule (aws-facts §13.1–13.3). Where it is rerun is the record's own
//! [`Place`]: its account, with the credentials of the member role there, and its Region. This
//! module holds what that needs without I/O: which accounts are served ([`AllowedAccounts`]),
//! where a record belongs ([`Place::of`]), whether its envelope and its CloudTrail record agree
//! ([`disagreement`]), the member role's ARN and session ([`member_role_arn`],
//! [`session_name`]), how the function recognises its own calls made under that role
//! ([`is_own_member_session`]), and the central key of a job made elsewhere than the
//! function's own account and Region ([`Place::is_own`]), which names the cluster by its full
//! ARN ([`qualified_key`]) so that no two accounts or Regions ever share a stored launch or a
//! notification. Tokens never use it: ECS scopes a `clientToken` to its cluster, whose ARN
//! names account and Region, so every record's tokens derive from the key a single-account
//! stack in that account and Region sends, and the two stacks, if both run, agree.

use std::fmt;

use crate::core::marks;

/// Which other accounts' records are acted on (`ECS_RERUN_ALLOWED_ACCOUNTS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedAccounts {
    /// These accounts (none: only the function's own).
    Listed(Vec<String>),
    /// `*`: every account whose events the bus lets in (its policy names the organization).
    Any,
}

/// None: only the function's own account.
impl Default for AllowedAccounts {
    fn default() -> Self {
        Self::NONE
    }
}

impl AllowedAccounts {
    /// No other account.
    pub const NONE: Self = Self::Listed(Vec::new());

    /// Whether `account` is served.
    pub fn contains(&self, account: &str) -> bool {
        match self {
            Self::Listed(accounts) => accounts.iter().any(|a| a == account),
            Self::Any => true,
        }
    }
}

/// Where a record's tasks run, and with whose credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Place {
    /// The function's own account, with its own credentials, in this Region.
    Home {
        /// The record's Region.
        region: String,
    },
    /// Another account of the organization, with the member role's credentials there.
    Member {
        /// The record's account.
        account: String,
        /// The record's Region.
        region: String,
    },
}

impl Place {
    /// Where a record of `account` and `region` belongs, for a function in `own_account`
    /// (`None`, a local run: every record is the function's own).
    pub fn of(account: &str, region: &str, own_account: Option<&str>) -> Self {
        match own_account {
            Some(own) if own != account => Self::Member {
                account: account.to_owned(),
                region: region.to_owned(),
            },
            _ => Self::Home {
                region: region.to_owned(),
            },
        }
    }

    /// The Region.
    pub fn region(&self) -> &str {
        match self {
            Self::Home { region } | Self::Member { region, .. } => region,
        }
    }

    /// Whether a record here is one a single-account stack of the function would handle: the
    /// function's own account, in its own Region (`own_region`; `None`, a local run: every
    /// Region). Only such a record keeps the keys it always had.
    pub fn is_own(&self, own_region: Option<&str>) -> bool {
        match self {
            Self::Home { region } => own_region.is_none_or(|own| own == region),
            Self::Member { .. } => false,
        }
    }

    /// The member account, if this is one.
    pub fn member_account(&self) -> Option<&str> {
        match self {
            Self::Home { .. } => None,
            Self::Member { account, .. } => Some(account),
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Home { region } => write!(f, "the function's own account, {region}"),
            Self::Member { account, region } => write!(f, "account {account}, {region}"),
        }
    }
}

/// Why a record is not where its envelope says it is: the envelope's `account`/`region` (set
/// by the bus that received it first, and kept by forwarding) against CloudTrail's
/// `recipientAccountId`/`awsRegion`. `None` when they agree or one side is silent.
pub fn disagreement(
    envelope_account: Option<&str>,
    envelope_region: Option<&str>,
    recipient_account: Option<&str>,
    aws_region: Option<&str>,
) -> Option<String> {
    let differs = |a: Option<&str>, b: Option<&str>| matches!((a, b), (Some(a), Some(b)) if a != b);
    (differs(envelope_account, recipient_account) || differs(envelope_region, aws_region)).then(
        || {
            format!(
                "the event says account {} in {}, but its CloudTrail record was made in account \
                 {} in {}",
                envelope_account.unwrap_or("?"),
                envelope_region.unwrap_or("?"),
                recipient_account.unwrap_or("?"),
                aws_region.unwrap_or("?")
            )
        },
    )
}

/// The AWS partition a Region belongs to (`aws`, `aws-cn`, `aws-us-gov`, ...).
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else if region.starts_with("eusc-") {
        "aws-eusc"
    } else {
        "aws"
    }
}

/// The member role in `account`: `arn:PARTITION:iam::ACCOUNT:role/NAME`.
pub fn member_role_arn(account: &str, region: &str, role_name: &str) -> String {
    format!("arn:{}:iam::{account}:role/{role_name}", partition(region))
}

/// The session name the function assumes member roles with: its own name, as Lambda names
/// its home session, so that records of its calls read the same in every account. STS wants
/// 2 to 64 characters; a local run without a function name uses `ecs-rerun`.
pub fn session_name(function_name: Option<&str>) -> String {
    function_name
        .filter(|n| (2..=64).contains(&n.len()))
        .unwrap_or("ecs-rerun")
        .to_owned()
}

/// Whether `caller_arn` is the function's session under the member role:
/// `arn:PARTITION:sts::ACCOUNT:assumed-role/ROLE/SESSION`. Its retries in a member account
/// come back through that account's bus with this identity.
pub fn is_own_member_session(caller_arn: &str, role_name: &str, session: &str) -> bool {
    marks::assumed_role(caller_arn).is_some_and(|(role, name)| role == role_name && name == session)
}

/// The full ARN of the cluster a request names: an ARN as given, a short or absent name
/// (`default`) expanded with the record's account and Region.
pub fn qualified_cluster(cluster: Option<&str>, account: &str, region: &str) -> String {
    match cluster {
        Some(arn) if arn.starts_with("arn:") => arn.to_owned(),
        name => format!(
            "arn:{}:ecs:{region}:{account}:cluster/{}",
            partition(region),
            name.unwrap_or("default")
        ),
    }
}

/// The central key of a job made elsewhere than the function's own account and Region: the
/// call's key ([`crate::core::marks::CallMarks::key`], which starts with the cluster's short
/// name) with the cluster's full ARN in its place, so that the same cluster name in two
/// accounts or Regions gives two stored launches and two notices. A key that does not start
/// with the short name (a task's key, which names the task's ARN) is returned as it is.
pub fn qualified_key(
    key: &str,
    cluster: Option<&str>,
    short_name: &str,
    account: &str,
    region: &str,
) -> String {
    match key
        .strip_prefix(short_name)
        .and_then(|r| r.strip_prefix('|'))
    {
        Some(rest) => format!("{}|{rest}", qualified_cluster(cluster, account, region)),
        None => key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_accounts_and_any() {
        let listed = AllowedAccounts::Listed(vec!["444455556666".to_owned()]);
        assert!(listed.contains("444455556666"));
        assert!(!listed.contains("777788889999"));
        assert!(!AllowedAccounts::default().contains("444455556666"));
        assert!(AllowedAccounts::Any.contains("777788889999"));
    }

    #[test]
    fn a_record_of_another_account_is_a_member_s() {
        assert_eq!(
            Place::of("444455556666", "eu-west-1", Some("111122223333")),
            Place::Member {
                account: "444455556666".into(),
                region: "eu-west-1".into()
            }
        );
        assert_eq!(
            Place::of("111122223333", "eu-west-1", Some("111122223333")),
            Place::Home {
                region: "eu-west-1".into()
            }
        );
        // Locally there is no own account: everything is home.
        assert_eq!(
            Place::of("444455556666", "us-east-1", None).member_account(),
            None
        );
    }

    #[test]
    fn only_the_own_account_in_the_own_region_is_own() {
        let here = Place::of("111122223333", "us-east-1", Some("111122223333"));
        let elsewhere = Place::of("111122223333", "eu-west-1", Some("111122223333"));
        let member = Place::of("444455556666", "us-east-1", Some("111122223333"));
        assert!(here.is_own(Some("us-east-1")));
        assert!(!elsewhere.is_own(Some("us-east-1")));
        assert!(!member.is_own(Some("us-east-1")));
        // A local run knows no Region: every home record is its own.
        assert!(elsewhere.is_own(None));
    }

    #[test]
    fn envelope_and_record_must_agree() {
        let a = Some("444455556666");
        let r = Some("eu-west-1");
        assert_eq!(disagreement(a, r, a, r), None);
        assert_eq!(disagreement(a, r, None, None), None);
        let why = disagreement(a, r, Some("777788889999"), r).expect("accounts differ");
        assert!(why.contains("444455556666") && why.contains("777788889999"));
        assert!(disagreement(a, r, a, Some("us-east-1")).is_some());
    }

    #[test]
    fn role_arns_follow_the_partition() {
        assert_eq!(
            member_role_arn("444455556666", "eu-west-1", "ecs-rerun-member"),
            "arn:aws:iam::444455556666:role/ecs-rerun-member"
        );
        assert_eq!(
            member_role_arn("444455556666", "cn-north-1", "r"),
            "arn:aws-cn:iam::444455556666:role/r"
        );
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
    }

    #[test]
    fn session_names_fit_sts() {
        assert_eq!(session_name(Some("ecs-rerun-prod")), "ecs-rerun-prod");
        assert_eq!(session_name(Some("x")), "ecs-rerun");
        assert_eq!(session_name(None), "ecs-rerun");
    }

    #[test]
    fn own_member_sessions_are_recognised() {
        let own = "arn:aws:sts::444455556666:assumed-role/ecs-rerun-member/ecs-rerun-prod";
        assert!(is_own_member_session(
            own,
            "ecs-rerun-member",
            "ecs-rerun-prod"
        ));
        assert!(!is_own_member_session(own, "other-role", "ecs-rerun-prod"));
        assert!(!is_own_member_session(own, "ecs-rerun-member", "someone"));
        assert!(!is_own_member_session(
            "arn:aws:iam::444455556666:role/ecs-rerun-member/ecs-rerun-prod",
            "ecs-rerun-member",
            "ecs-rerun-prod"
        ));
        assert!(!is_own_member_session(
            "arn:aws:sts::444455556666:assumed-role/ecs-rerun-member/ecs-rerun-prod/x",
            "ecs-rerun-member",
            "ecs-rerun-prod"
        ));
    }

    #[test]
    fn clusters_are_qualified_with_the_record_s_place() {
        assert_eq!(
            qualified_cluster(None, "444455556666", "eu-west-1"),
            "arn:aws:ecs:eu-west-1:444455556666:cluster/default"
        );
        assert_eq!(
            qualified_cluster(Some("batch"), "444455556666", "eu-west-1"),
            "arn:aws:ecs:eu-west-1:444455556666:cluster/batch"
        );
        let arn = "arn:aws:ecs:eu-west-1:444455556666:cluster/batch";
        assert_eq!(qualified_cluster(Some(arn), "1", "x"), arn);
    }

    #[test]
    fn qualified_keys_name_the_cluster_by_arn() {
        let key = "batch|token|abc";
        let a = qualified_key(key, Some("batch"), "batch", "444455556666", "eu-west-1");
        let b = qualified_key(key, Some("batch"), "batch", "444455556666", "us-east-1");
        let c = qualified_key(key, Some("batch"), "batch", "777788889999", "eu-west-1");
        assert_eq!(
            a,
            "arn:aws:ecs:eu-west-1:444455556666:cluster/batch|token|abc"
        );
        assert!(a != b && a != c && b != c);
        // The short name and the ARN of one cluster give one key.
        let arn = "arn:aws:ecs:eu-west-1:444455556666:cluster/batch";
        assert_eq!(
            qualified_key(key, Some(arn), "batch", "444455556666", "eu-west-1"),
            a
        );
        // A task's key names the task's ARN already.
        let task = "task|arn:aws:ecs:eu-west-1:444455556666:task/batch/1";
        assert_eq!(
            qualified_key(task, Some("batch"), "batch", "444455556666", "eu-west-1"),
            task
        );
    }
}
